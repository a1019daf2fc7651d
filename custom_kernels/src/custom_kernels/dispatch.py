"""The tuned dispatch table: which kernel (and config) wins per GPU, dtype, (N, K) and M bucket.

File format (JSON, written by ``custom_kernels.tune``)::

    {"schema": 1,
     "gpus": {"NVIDIA H100 80GB HBM3": {"bfloat16": {
         "meta": {"time_utc": ..., "torch": {"version": ..., "triton": ..., ...}, "models": ..., ...},
         "shapes": {"1152x896": {"1": {"kernel": "triton_splitk", "config": {...}, "us": 4.1,
                                        "cublas_us": 5.0, "speedup": 1.22,
                                        "best_triton": {"kernel": ..., "config": ..., "us": ...}}}}}}}}

Keys: shape "NxK", bucket = the M it was tuned at (powers of two 1..8192). A call with M uses the
smallest tuned bucket >= M (the largest one beyond it). No entry, or cuBLAS won: cuBLAS (F.linear).

Tensor parallelism needs nothing of its own here: a rank's linear is an ordinary GEMM of its shard's
shape (Llama-3-8B's gate_up_proj is "28672x4096" at TP=1, "14336x4096" on each of two ranks), so the
entries of every TP size sit side by side under "shapes", and a shape two configs share (at any TP) is
one entry. ``coverage`` ({"<tp>": [model, ...]}) records which models' shapes were tuned at which TP;
``meta`` is the last tune's.

One file per GPU: ``tables/<gpu slug>.json`` (``nvidia-h200.json``), so a retune on one card is a diff of
that card's file only. ``CUSTOM_KERNELS_TABLE`` names one file instead (it may hold several GPUs).
"""

from __future__ import annotations

import functools
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

SCHEMA = 1
BUCKETS: tuple[int, ...] = tuple(1 << i for i in range(14))  # 1 .. 8192
TABLES_DIR = Path(__file__).with_name("tables")
DTYPE_NAMES = {torch.float16: "float16", torch.bfloat16: "bfloat16", torch.float32: "float32"}


def bucket_for(m: int, buckets: tuple[int, ...] = BUCKETS) -> int:
    """The tuned bucket that serves M: the smallest bucket >= M, else the largest."""
    for b in buckets:
        if m <= b:
            return b
    return buckets[-1]


def tuned_bucket(per_shape: dict[str, Any], m: int) -> str:
    """The key of the entry that serves M among one shape's tuned buckets (``bucket_for`` over the buckets it has)."""
    return str(bucket_for(m, tuple(sorted(int(b) for b in per_shape)) or BUCKETS))


def shape_key(n: int, k: int) -> str:
    return f"{n}x{k}"


@dataclass(frozen=True)
class Choice:
    """What the dispatcher runs for one call."""

    kernel: str
    config: dict[str, Any] | None = None


CUBLAS = Choice("cublas")


@dataclass
class DispatchTable:
    """In-memory view of the JSON table: gpu -> dtype -> shape -> bucket -> entry."""

    gpus: dict[str, dict[str, Any]] = field(default_factory=dict)

    def lookup(self, gpu: str, dtype: str, n: int, k: int, m: int) -> Choice:
        """The winner for this call, or cuBLAS when the table has nothing for it."""
        per_shape = self.gpus.get(gpu, {}).get(dtype, {}).get("shapes", {}).get(shape_key(n, k))
        if not per_shape:
            return CUBLAS
        entry = per_shape.get(tuned_bucket(per_shape, m))
        if not entry or entry.get("kernel", "cublas") == "cublas":
            return CUBLAS
        return Choice(entry["kernel"], entry.get("config"))

    def routes_any(self, gpu: str, dtype: str, n: int, k: int) -> bool:
        """Whether some tuned bucket of this shape runs anything but cuBLAS (else routing it only adds cost)."""
        per_shape = self.gpus.get(gpu, {}).get(dtype, {}).get("shapes", {}).get(shape_key(n, k)) or {}
        return any(entry.get("kernel", "cublas") != "cublas" for entry in per_shape.values())

    def entry(self, gpu: str, dtype: str, n: int, k: int, bucket: int) -> dict[str, Any] | None:
        """The raw tuned entry (with best_triton and timings), for benchmarks and reports."""
        return self.gpus.get(gpu, {}).get(dtype, {}).get("shapes", {}).get(shape_key(n, k), {}).get(str(bucket))

    def set_entries(self, gpu: str, dtype: str, shapes: dict[str, dict[str, Any]], meta: dict[str, Any]) -> None:
        """Merge newly tuned shapes in (other GPUs, dtypes and shapes are kept); the models and TP size
        ``meta`` names join the slot's coverage."""
        slot = self.gpus.setdefault(gpu, {}).setdefault(dtype, {"meta": {}, "shapes": {}})
        coverage = self.coverage(gpu, dtype)
        if meta.get("models"):
            tp = str(meta.get("tp", 1))
            coverage[tp] = sorted({*coverage.get(tp, []), *meta["models"]})
        slot["meta"] = meta
        if coverage:
            slot["coverage"] = coverage
        for key, buckets in shapes.items():
            slot["shapes"].setdefault(key, {}).update(buckets)

    def merge(self, other: DispatchTable) -> None:
        """Take in another table's entries and coverage (e.g. tunes run side by side, one per GPU of a host)."""
        for gpu, per_dtype in other.gpus.items():
            for dtype, slot in per_dtype.items():
                mine = self.gpus.setdefault(gpu, {}).setdefault(dtype, {"meta": {}, "shapes": {}})
                coverage = self.coverage(gpu, dtype)
                for tp, models in other.coverage(gpu, dtype).items():
                    coverage[tp] = sorted({*coverage.get(tp, []), *models})
                if coverage:
                    mine["coverage"] = coverage
                mine["meta"] = slot.get("meta") or mine["meta"]
                for key, buckets in slot.get("shapes", {}).items():
                    mine["shapes"].setdefault(key, {}).update(buckets)

    def coverage(self, gpu: str, dtype: str) -> dict[str, list[str]]:
        """TP size ("1", "2", ...) -> the models whose shapes were tuned at it. A table from before coverage
        was recorded says it through its last tune's meta (its models at its TP)."""
        slot = self.gpus.get(gpu, {}).get(dtype, {})
        if "coverage" in slot:
            return {tp: list(models) for tp, models in slot["coverage"].items()}
        meta = slot.get("meta") or {}
        return {str(meta.get("tp", 1)): sorted(meta["models"])} if meta.get("models") else {}

    def to_json(self) -> dict[str, Any]:
        return {"schema": SCHEMA, "gpus": self.gpus}


def read_table(path: str | Path) -> DispatchTable:
    """Parse a table file; a missing file is an empty table, a wrong schema is an error that says so."""
    path = Path(path)
    if not path.exists():
        return DispatchTable()
    data = json.loads(path.read_text())
    if data.get("schema") != SCHEMA:
        raise ValueError(f"{path}: dispatch table schema {data.get('schema')!r}, expected {SCHEMA}: re-run tune")
    return DispatchTable(gpus=data.get("gpus", {}))


def write_table(table: DispatchTable, path: str | Path) -> Path:
    """Write the table (sorted keys, stable diffs)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(table.to_json(), indent=1, sort_keys=True) + "\n")
    return path


def gpu_slug(name: str) -> str:
    """A file-name form of a GPU's name: 'NVIDIA H100 80GB HBM3' -> 'nvidia-h100-80gb-hbm3'."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def table_path(gpu: str | None = None) -> Path:
    """CUSTOM_KERNELS_TABLE when set; else the shipped table of ``gpu`` (tables/<slug>.json)."""
    override = os.environ.get("CUSTOM_KERNELS_TABLE")
    if override:
        return Path(override)
    if gpu is None:
        raise ValueError("no GPU named: the shipped tables are one file per GPU (tables/<gpu slug>.json)")
    return TABLES_DIR / f"{gpu_slug(gpu)}.json"


_MAX_KEPT = 1 << 16


class _Tables(DispatchTable):
    """The tables the op dispatches with: each GPU's file read on its first lookup, once per process.

    Every call of the op looks its kernel up, on the host, in the steps that run outside CUDA graphs: the answer
    per (gpu, dtype, shape, M) is kept, since nothing changes these tables after their file is read (a dict
    lookup instead of the bucket search, a few microseconds less per call)."""

    def __init__(self) -> None:
        super().__init__()
        self._choices: dict[tuple[str, str, int, int, int], Choice] = {}

    def lookup(self, gpu: str, dtype: str, n: int, k: int, m: int) -> Choice:
        key = (gpu, dtype, n, k, m)
        choice = self._choices.get(key)
        if choice is not None:
            return choice
        if gpu not in self.gpus:
            self.gpus.update(read_table(table_path(gpu)).gpus)
            self.gpus.setdefault(gpu, {})
        if len(self._choices) >= _MAX_KEPT:  # M takes as many values as a step has tokens: keep it bounded
            self._choices.clear()
        choice = self._choices[key] = super().lookup(gpu, dtype, n, k, m)
        return choice

    def routes_any(self, gpu: str, dtype: str, n: int, k: int) -> bool:
        self.lookup(gpu, dtype, n, k, 1)
        return super().routes_any(gpu, dtype, n, k)

    def entry(self, gpu: str, dtype: str, n: int, k: int, bucket: int) -> dict[str, Any] | None:
        self.lookup(gpu, dtype, n, k, bucket)
        return super().entry(gpu, dtype, n, k, bucket)


@functools.lru_cache(maxsize=1)
def active_table() -> DispatchTable:
    """The table the op dispatches with (``reload_table()`` forgets what was read)."""
    override = os.environ.get("CUSTOM_KERNELS_TABLE")
    return read_table(override) if override else _Tables()


def reload_table() -> DispatchTable:
    active_table.cache_clear()
    return active_table()


@functools.cache
def gpu_name(device: torch.device) -> str:
    """The table's GPU key: torch's device name (e.g. 'NVIDIA H100 80GB HBM3')."""
    return torch.cuda.get_device_name(device)
