"""Confirm from a profiler trace which GPU kernels ran — the proof that works under CUDA graphs.

Host counters stop at graph capture (counters.py); the GPU still records every kernel of a replay.
``kernel_counts(fn)`` runs ``fn`` under torch.profiler and counts GPU kernels by name;
``custom_kernels_in(counts)`` maps them to this package's Triton candidates (cuBLAS and cuBLASLt
kernels share cuBLAS's names, so they can't be told apart here: use the host counters for those).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path

import torch

from .gemm.candidates import CANDIDATES


def kernel_counts(fn: Callable[[], object], trace_path: str | Path | None = None) -> Counter[str]:
    """Run ``fn`` once under the CUDA profiler; return GPU kernel name -> launches (replays included)."""
    from torch.profiler import ProfilerActivity, profile

    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    if trace_path is not None:
        prof.export_chrome_trace(str(trace_path))
    counts: Counter[str] = Counter()
    for event in prof.events():
        if getattr(event, "device_type", None) == torch.autograd.DeviceType.CUDA:
            counts[event.name] += 1
    return counts


def custom_kernels_in(counts: Counter[str] | dict[str, int]) -> dict[str, int]:
    """Launches per Triton candidate (e.g. {'triton_splitk': 24}) found among kernel names."""
    found: dict[str, int] = {}
    for cand in CANDIDATES.values():
        if not cand.trace_name:
            continue
        total = sum(n for name, n in counts.items() if cand.trace_name in name)
        if total:
            found[cand.name] = total
    return found


def assert_ran_in_graph(graph: torch.cuda.CUDAGraph, kernel: str, replays: int = 1) -> int:
    """Replay ``graph`` under the profiler and check ``kernel``'s GPU kernels ran; returns launches."""
    counts = kernel_counts(lambda: [graph.replay() for _ in range(replays)])
    launches = custom_kernels_in(counts).get(kernel, 0)
    if launches < replays:
        seen = ", ".join(sorted(counts)) or "no GPU kernels"
        raise AssertionError(f"{kernel} did not run in the CUDA graph replay ({launches} launches); saw: {seen}")
    return launches
