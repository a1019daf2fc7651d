"""Trace records: dataclasses with units in their field names, saved as JSON and loaded back.

A trace file is ``{"kind": "layers"|"modules"|"kernels", "schema": 1, "environment": {...}, ...}`` so it can
be analysed or printed again anywhere later (``load_trace``), like vLLM's layerwise profiler does.
"""

from __future__ import annotations

import json
import platform
import sys
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

SCHEMA = 1


@dataclass
class ModuleCall:
    """One forward call of one module, in call order."""

    index: int                      # position in the call order (0-based)
    name: str                       # module path in the root, e.g. "model.layers.0.self_attn.q_proj"
    type: str                       # class name, e.g. "Linear"
    type_path: str                  # importable class path, e.g. "torch.nn.modules.linear.Linear"
    depth: int                      # nesting depth of the call (0: a top-level call)
    parent: int | None              # index of the enclosing call, None at top level
    step: int                       # forward step: how many calls of the root module started before (0-based)
    input_shapes: list[Any]         # positional args: a shape list per tensor, nested for tuples, None otherwise
    kwarg_shapes: dict[str, Any]    # tensor keyword args only
    output_shapes: Any              # same encoding as input_shapes for the return value
    cpu_time_us: float              # host time from the pre- to the post-hook (children included)
    self_cpu_time_us: float = 0.0   # cpu_time_us minus the children's cpu_time_us
    cuda_time_us: float | None = None  # CUDA event time of the call (only with cuda timing on a GPU)
    stack: str = ""                 # enclosing calls' names, outermost first, joined by " > "


@dataclass
class ModuleStat:
    """Calls of one module type (or one module name) aggregated."""

    key: str
    calls: int
    total_cpu_time_us: float
    self_cpu_time_us: float
    mean_cpu_time_us: float
    min_cpu_time_us: float
    max_cpu_time_us: float
    total_cuda_time_us: float | None = None


@dataclass
class OperatorCount:
    """The per-step count of one module type, written as ``per_layer × layers + outside``."""

    type: str
    per_step: float                 # calls per forward step
    per_layer: float | None         # calls inside each decoder layer per step (None: not evenly spread)
    outside_layers: float           # calls per step outside the decoder layers
    formula: str                    # e.g. "2 × layers + 1"


@dataclass
class KernelStat:
    """One kernel (or CPU op) name aggregated over the profiled run, with its source."""

    name: str                       # as the profiler reports it (demangled)
    short_name: str                 # qualified function name without template/parameter lists
    device: str                     # "cuda" (GPU kernel / memcpy) or "cpu" (CPU op, self time)
    calls: int
    total_time_us: float
    avg_time_us: float
    min_time_us: float
    max_time_us: float
    percent: float                  # of the device's total
    category: str                   # attention / norm / rotary / activation / cache / gemm / ...
    origin: str                     # vllm-csrc / vllm-triton / custom / cublas / triton-inductor / aten / ... / unknown
    source_file: str | None
    source_line: int | None = None
    note: str = ""


@dataclass
class GroupStat:
    """Kernels of one (category, origin) group."""

    category: str
    origin: str
    kernels: int
    calls: int
    total_time_us: float
    percent: float


def environment() -> dict[str, Any]:
    """Versions and devices a trace was taken with (saved in every trace file), captured by the bench
    sessions' functions (workbench/guest/bench_env.py) so each field means what it means there: GPUs through
    NVML, torch/CUDA/triton, the imported vLLM and custom_kernels (when the trace used them), env vars."""
    from workbench.guest import bench_env

    env: dict[str, Any] = {**bench_env.basics(), "machine": platform.machine(), "gpus": bench_env.gpus(),
                           "torch": bench_env.torch_info(), **bench_env.package_versions(("transformers",)),
                           "env": bench_env.env_vars()}
    if "vllm" in sys.modules:
        env["vllm"] = bench_env.vllm_info()
    if "custom_kernels" in sys.modules:  # a --custom-gemm trace: which package and dispatch table ran
        env["custom_kernels"] = bench_env.custom_kernels_info()
    return env


def to_jsonable(obj: Any) -> Any:
    if hasattr(obj, "__dataclass_fields__"):
        return asdict(obj)
    if isinstance(obj, list | tuple):
        return [to_jsonable(x) for x in obj]
    if isinstance(obj, dict):
        return {k: to_jsonable(v) for k, v in obj.items()}
    return obj


def save_trace(path: Path | str, kind: str, payload: dict[str, Any], env: dict[str, Any] | None = None) -> Path:
    """Write one trace file (JSON, dataclasses flattened)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {"kind": kind, "schema": SCHEMA, "environment": env or environment(), **to_jsonable(payload)}
    path.write_text(json.dumps(doc, indent=1))
    return path


_LIST_TYPES = {"calls": ModuleCall, "type_stats": ModuleStat, "name_stats": ModuleStat,
               "operators": OperatorCount, "kernels": KernelStat, "groups": GroupStat}


def load_trace(path: Path | str) -> dict[str, Any]:
    """Read a trace file back; record lists become their dataclasses again."""
    doc = json.loads(Path(path).read_text())
    if doc.get("schema") != SCHEMA or "kind" not in doc:
        from workbench.errors import WorkbenchError

        raise WorkbenchError(f"{path} is not a workbench trace file (schema {SCHEMA}): "
                             "write one with python -m workbench.trace MODE")
    for key, cls in _LIST_TYPES.items():
        if isinstance(doc.get(key), list):
            names = {f.name for f in fields(cls)}
            doc[key] = [cls(**{k: v for k, v in row.items() if k in names}) for row in doc[key]]
    return doc


@dataclass
class LayerInfo:
    """Where the repeated decoder layers sit in a model."""

    prefix: str                     # path of the ModuleList, e.g. "model.layers"
    count: int
    layer_type: str
    first_layer: str = field(default="")  # e.g. "model.layers.0"
