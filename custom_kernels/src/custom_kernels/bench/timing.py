"""GPU timing shared by the tuner and the benchmark: CUDA-graph replays over rotating operands.

Why this way: each call's operands are one of several copies whose total size exceeds L2 several
times, so every call reads its weight from HBM as in a real model (the "L2 flush", without a flush
kernel polluting the timing); the calls are captured into a CUDA graph so launch overhead (Triton's
Python launcher is ~20 us) doesn't hide small-M kernels, as under vLLM's own CUDA graphs. One
sample = one replay of ``inner`` passes over the copies, timed with CUDA events.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Timing:
    """Per-call time statistics in microseconds over the replay samples."""

    median_us: float
    p20_us: float
    p80_us: float
    samples: int

    @classmethod
    def from_samples(cls, samples: Sequence[float]) -> Timing:
        ordered = sorted(samples)
        if len(ordered) == 1:
            return cls(ordered[0], ordered[0], ordered[0], 1)
        q = statistics.quantiles(ordered, n=10, method="inclusive")
        return cls(statistics.median(ordered), q[1], q[7], len(ordered))


def l2_bytes(device: torch.device | None = None) -> int:
    props = torch.cuda.get_device_properties(device or torch.cuda.current_device())
    return int(getattr(props, "L2_cache_size", 50 << 20))


def copies_needed(bytes_per_call: int, device: torch.device | None = None, cap: int = 64) -> int:
    """How many operand copies make one pass over them read >= 3x the L2 size."""
    return max(1, min(cap, math.ceil(3 * l2_bytes(device) / max(1, bytes_per_call))))


def time_calls(calls: Sequence[Callable[[], object]], reps: int = 15, min_replay_us: float = 300.0,
               use_graph: bool = True) -> Timing:
    """Time one call of ``calls`` (each over its own operand copy) as graph replays; returns per-call stats."""
    for call in calls:  # warm-up: Triton compiles, cuBLAS picks its kernel, allocator pools fill
        call()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for call in calls:
        call()
    end.record()
    end.synchronize()
    est_us = max(start.elapsed_time(end) * 1000.0, 1.0)
    inner = max(1, min(32, math.ceil(min_replay_us / est_us)))
    run: Callable[[], object]
    graph = None
    if use_graph:
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            for _ in range(inner):
                for call in calls:
                    call()
        graph.replay()
        run = graph.replay
    else:
        def run():
            for _ in range(inner):
                for call in calls:
                    call()
    torch.cuda.synchronize()
    samples = []
    for _ in range(reps):
        start.record()
        run()
        end.record()
        end.synchronize()
        samples.append(start.elapsed_time(end) * 1000.0 / (inner * len(calls)))
    del graph
    return Timing.from_samples(samples)
