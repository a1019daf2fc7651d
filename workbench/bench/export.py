"""A saved bench session as CSV, one row per run record, for spreadsheets and pandas: the run's identity,
outcome, every metric, the custom-kernel calls and the NVML readings taken while it ran."""

from __future__ import annotations

import csv
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from workbench.bench.results import METRICS, RunResult, load_records
from workbench.errors import WorkbenchError

CSV_NAME = "runs.csv"  # beside the session's records by default
# repeat: the run's repeat (cli driver) or its round (paired driver); point: serve's load point (empty otherwise).
FIXED = ("run_id", "mode", "arm", "point", "repeat", "index", "returncode", "error", "started_utc", "seconds",
         "n_samples", "custom_calls", "processes", "processes_with_custom_kernels")


def _ordered_union(keys: list[list[str]]) -> list[str]:
    seen: dict[str, None] = {}
    for group in keys:
        seen.update(dict.fromkeys(group))
    return list(seen)


def columns(records: Sequence[RunResult]) -> list[str]:
    """The fixed columns, every metric key (the known ones in their order, then any other), every scalar NVML
    reading as gpu_<key>."""
    known = [m.key for defs in METRICS.values() for m in defs]
    metrics = _ordered_union([[k for k in known if any(k in r.metrics for r in records)],
                              *[list(r.metrics) for r in records]])
    gpu = _ordered_union([[k for k, v in r.gpu.items() if not isinstance(v, dict | list)] for r in records])
    return [*FIXED, *metrics, *(f"gpu_{k}" for k in gpu)]


def row(record: RunResult) -> dict[str, Any]:
    """One record as a CSV row (missing values stay empty: no dump, a failed run's metrics)."""
    counts = record.counts or {}
    return {"run_id": record.run_id, "mode": record.mode, "arm": record.arm, "point": record.point,
            "repeat": record.repeat, "index": record.index, "returncode": record.returncode, "error": record.error,
            "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(record.started)),
            "seconds": record.seconds, "n_samples": len(record.samples), "custom_calls": counts.get("total_calls"),
            "processes": counts.get("processes"),
            "processes_with_custom_kernels": counts.get("processes_with_custom_kernels"),
            **record.metrics, **{f"gpu_{k}": v for k, v in record.gpu.items() if not isinstance(v, dict | list)}}


def export_csv(session_dir: Path, out: Path | None = None) -> tuple[Path, int]:
    """Write the session's runs to ``out`` (default <session>/runs.csv); returns the path and the row count."""
    if not session_dir.is_dir():
        raise WorkbenchError(f"no session folder {session_dir}: pass results/<timestamp>-<model> or its name")
    records = load_records(session_dir)
    target = out or session_dir / CSV_NAME
    if target.is_dir():
        target = target / CSV_NAME
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(target, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=columns(records), extrasaction="raise")
            writer.writeheader()
            for r in records:
                writer.writerow(row(r))
    except OSError as err:
        raise WorkbenchError(f"cannot write {target} ({err.strerror}): choose another --out") from None
    return target, len(records)
