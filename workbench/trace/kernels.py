"""Kernel profile: torch.profiler -> Chrome trace -> kernel table with each kernel's category and source.

One code path for both devices and both profiler routes: whatever produced the Chrome trace (our own
``torch.profiler`` around a callable, or vLLM's worker profiler writing into a directory), the table is
built from the trace's events. On CUDA the rows are GPU kernels, memcpys and memsets; on CPU they are
``cpu_op`` events with their self time (children subtracted), so the same tables work without a GPU.
"""

from __future__ import annotations

import gzip
import json
from collections import defaultdict
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from workbench.trace.kernel_map import KernelIndex
from workbench.trace.kernel_names import categorize, library_origin, split_kernel_name
from workbench.trace.records import GroupStat, KernelStat

DEVICE_CATS = ("kernel", "gpu_memcpy", "gpu_memset")


def profile_to_chrome_trace(fn: Callable[[], Any], trace_path: Path | str, cuda: bool,
                            record_shapes: bool = False) -> Path:
    """Run ``fn`` under torch.profiler (CPU, plus CUDA when asked) and export the Chrome trace."""
    import torch

    activities = [torch.profiler.ProfilerActivity.CPU]
    if cuda:
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=activities, record_shapes=record_shapes) as prof:
        fn()
        if cuda:
            torch.cuda.synchronize()
    trace_path = Path(trace_path)
    trace_path.parent.mkdir(parents=True, exist_ok=True)
    prof.export_chrome_trace(str(trace_path))
    return trace_path


def load_chrome_events(path: Path | str) -> list[dict[str, Any]]:
    """Complete ("X") events of a Chrome trace file (.json or .json.gz)."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt") as fh:
        doc = json.load(fh)
    events = doc["traceEvents"] if isinstance(doc, dict) else doc
    return [e for e in events if e.get("ph") == "X" and "dur" in e]


def find_trace_files(directory: Path | str) -> list[Path]:
    """Trace files vLLM's torch profiler wrote (``*.pt.trace.json[.gz]``), newest last."""
    directory = Path(directory)
    files = [p for p in directory.rglob("*")
             if p.is_file() and p.name.endswith((".json", ".json.gz")) and ".trace." in p.name]
    return sorted(files, key=lambda p: p.stat().st_mtime)


def _cpu_self_times(events: list[dict[str, Any]]) -> list[tuple[str, float]]:
    """(name, self time us) of each cpu_op: its duration minus its direct children's, per thread."""
    by_thread: dict[tuple[Any, Any], list[dict[str, Any]]] = defaultdict(list)
    for e in events:
        if e.get("cat") == "cpu_op":
            by_thread[(e.get("pid"), e.get("tid"))].append(e)
    out: list[tuple[str, float]] = []
    for evs in by_thread.values():
        evs.sort(key=lambda e: (float(e["ts"]), -float(e["dur"])))
        stack: list[list[Any]] = []  # [end, name, dur, children_dur]
        for e in evs:
            ts, dur = float(e["ts"]), float(e["dur"])
            while stack and ts >= stack[-1][0] - 1e-3:
                _, name, d, ch = stack.pop()
                out.append((name, max(d - ch, 0.0)))
            if stack:
                stack[-1][3] += dur
            stack.append([ts + dur, e["name"], dur, 0.0])
        while stack:
            _, name, d, ch = stack.pop()
            out.append((name, max(d - ch, 0.0)))
    return out


def device_samples(events: list[dict[str, Any]], device: str) -> list[tuple[str, float]]:
    """(name, time us) samples: GPU kernels/copies for "cuda", cpu_op self times for "cpu"."""
    if device == "cuda":
        return [(e["name"], float(e["dur"])) for e in events if e.get("cat") in DEVICE_CATS]
    return _cpu_self_times(events)


RUNTIME_CATS = ("cuda_runtime", "cuda_driver")


def samples_with_callers(events: list[dict[str, Any]], device: str) -> list[tuple[str, float, tuple[str, ...]]]:
    """(name, time us, the CPU ops it ran under, outermost first) of each sample: for "cuda" each GPU kernel or
    copy with the ops open on its launching thread when it was launched (matched by correlation id; a
    CUDA-graph replay launches from no op), for "cpu" each cpu_op's self time with its enclosing ops."""
    by_thread: dict[tuple[Any, Any], list[dict[str, Any]]] = defaultdict(list)
    for e in events:
        if e.get("cat") == "cpu_op" or (device == "cuda" and e.get("cat") in RUNTIME_CATS):
            by_thread[(e.get("pid"), e.get("tid"))].append(e)
    callers: dict[Any, tuple[str, ...]] = {}
    out: list[tuple[str, float, tuple[str, ...]]] = []
    for evs in by_thread.values():
        evs.sort(key=lambda e: (float(e["ts"]), -float(e["dur"])))
        stack: list[list[Any]] = []  # [end, name, dur, children_dur]

        def close(until: float | None, stack: list[list[Any]] = stack) -> None:
            while stack and (until is None or until >= stack[-1][0] - 1e-3):
                _, name, d, ch = stack.pop()
                if device == "cpu":
                    out.append((name, max(d - ch, 0.0), tuple(s[1] for s in stack)))

        for e in evs:
            ts, dur = float(e["ts"]), float(e["dur"])
            close(ts)
            if e.get("cat") != "cpu_op":
                corr = (e.get("args") or {}).get("correlation")
                if corr is not None:
                    callers[corr] = tuple(s[1] for s in stack)
                continue
            if stack:
                stack[-1][3] += dur
            stack.append([ts + dur, e["name"], dur, 0.0])
        close(None)
    if device == "cuda":
        out = [(e["name"], float(e["dur"]), callers.get((e.get("args") or {}).get("correlation"), ()))
               for e in events if e.get("cat") in DEVICE_CATS]
    return out


def kernel_table(samples: Iterable[tuple[str, float]], index: KernelIndex | None, device: str) -> list[KernelStat]:
    """Aggregate samples by name; map each name to its origin, category and source file."""
    groups: dict[str, list[float]] = defaultdict(list)
    for name, dur in samples:
        groups[name].append(dur)
    grand = sum(sum(v) for v in groups.values()) or 1.0
    rows = []
    for name, durs in groups.items():
        if index is not None:
            src = index.lookup(name)
            short, origin, category, file, line, note = (src.short_name, src.origin, src.category, src.source_file,
                                                         src.source_line, src.note)
        else:
            q, base, _ = split_kernel_name(name)
            short, origin, category, file, line = "::".join([*q, base]), library_origin(name) or "unknown", \
                categorize(name), None, None
            note = "" if origin != "unknown" else "no source index given"
        if device == "cpu" and origin == "unknown" and name.startswith("aten::"):
            origin, note = "aten", "PyTorch CPU operator"
        total = sum(durs)
        rows.append(KernelStat(name=name, short_name=short, device=device, calls=len(durs), total_time_us=total,
                               avg_time_us=total / len(durs), min_time_us=min(durs), max_time_us=max(durs),
                               percent=100.0 * total / grand, category=category, origin=origin, source_file=file,
                               source_line=line, note=note))
    rows.sort(key=lambda r: -r.total_time_us)
    return rows


def group_table(rows: Iterable[KernelStat]) -> list[GroupStat]:
    """Kernels grouped by (category, origin): e.g. gemm/cublas vs gemm/custom vs gemm/vllm-triton."""
    acc: dict[tuple[str, str], list[KernelStat]] = defaultdict(list)
    rows = list(rows)
    grand = sum(r.total_time_us for r in rows) or 1.0
    for r in rows:
        acc[(r.category, r.origin)].append(r)
    out = [GroupStat(category=c, origin=o, kernels=len(rs), calls=sum(r.calls for r in rs),
                     total_time_us=sum(r.total_time_us for r in rs),
                     percent=100.0 * sum(r.total_time_us for r in rs) / grand) for (c, o), rs in acc.items()]
    out.sort(key=lambda g: -g.total_time_us)
    return out


def kernels_from_trace(paths: Iterable[Path | str], index: KernelIndex | None, device: str
                       ) -> tuple[list[KernelStat], list[GroupStat]]:
    """The kernel table and its groups from one or more Chrome trace files."""
    samples: list[tuple[str, float]] = []
    for p in paths:
        samples.extend(device_samples(load_chrome_events(p), device))
    rows = kernel_table(samples, index, device)
    return rows, group_table(rows)
