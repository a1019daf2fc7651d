"""Where the GPU waited inside a profiled generate: the gaps between its kernels.

A kernel-by-kernel delta (attribution.py) sums what the GPU ran; it cannot see time the GPU spent waiting for the
host to launch the next kernel. That is where a route's host-side cost shows (an op's Python body run eagerly, a
launch the graph no longer holds, a rank late to its all-reduce): at TP=2 on the H200 the custom arm's rank 0 had
54 ms of gaps over 100 µs in one profiled generate against the baseline's 2.3 ms, with kernel sums within 1%.

Per trace (one process: one rank's worker or the engine core), the device's kernels, copies and memsets are merged
into busy intervals (streams overlap); the span is first start to last end, idle is span minus busy, and every gap
over ``GAP_US`` is counted, the largest kept with the kernels on either side of it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from workbench.trace.kernels import DEVICE_CATS

GAP_US = 100.0  # shorter gaps are launch latency between kernels a busy host keeps up with
KEEP = 5


@dataclass(frozen=True)
class Gap:
    at_us: float  # from the start of its trace's span
    us: float
    before: str  # the kernel that ended when the gap began
    after: str  # the kernel that started when it ended


@dataclass(frozen=True)
class Idle:
    span_us: float  # first device activity to last, summed over traces (ranks side by side)
    busy_us: float  # the union of device intervals
    gaps: int  # gaps over GAP_US
    gap_us: float  # their total
    largest: list[Gap] = field(default_factory=list)

    @property
    def idle_us(self) -> float:
        return self.span_us - self.busy_us


def _short(name: str) -> str:
    return name.split("(")[0].replace("void ", "")[:60]


def idle(traces: list[list[dict[str, Any]]], threshold_us: float = GAP_US, keep: int = KEEP) -> Idle | None:
    """The GPU's idle time over ``traces`` (each one file's complete events); None when none has a device event
    (a CPU trace)."""
    span = busy = gap_total = 0.0
    count = 0
    found: list[Gap] = []
    any_device = False
    for events in traces:
        device = sorted((float(e["ts"]), float(e["ts"]) + float(e["dur"]), e.get("name", ""))
                        for e in events if e.get("cat") in DEVICE_CATS)
        if not device:
            continue
        any_device = True
        start = device[0][0]
        end, last = device[0][1], device[0][2]
        busy_here = device[0][1] - device[0][0]
        for ts, te, name in device[1:]:
            if ts > end:
                if ts - end > threshold_us:
                    count += 1
                    gap_total += ts - end
                    found.append(Gap(round(end - start, 1), round(ts - end, 1), _short(last), _short(name)))
                busy_here += te - ts
            elif te > end:
                busy_here += te - end
            if te > end:
                end, last = te, name
        span += end - start
        busy += busy_here
    if not any_device:
        return None
    found.sort(key=lambda g: -g.us)
    return Idle(round(span, 1), round(busy, 1), count, round(gap_total, 1), found[:keep])


def describe(arm: str, gone: Idle) -> str:
    """One line per arm for the attribution's report."""
    line = (f"GPU idle, {arm}: {gone.idle_us / 1e3:.2f} ms of its {gone.span_us / 1e3:.1f} ms span "
            f"({gone.gaps} gaps over {GAP_US:.0f} µs: {gone.gap_us / 1e3:.2f} ms)")
    if gone.largest:
        g = gone.largest[0]
        line += f"; largest {g.us / 1e3:.2f} ms at {g.at_us / 1e3:.1f} ms, after {g.before}, before {g.after}"
    return line


def report(by_arm: dict[str, Idle]) -> list[str]:
    """The attribution's lines: each arm's idle time, then the custom arm's extra wait beside the baseline's span."""
    lines = [describe(arm, gone) for arm, gone in by_arm.items()]
    if {"baseline", "custom"} <= set(by_arm) and by_arm["baseline"].span_us:
        more = by_arm["custom"].idle_us - by_arm["baseline"].idle_us
        share = 100 * more / by_arm["baseline"].span_us
        lines.append(f"GPU idle, custom - baseline: {more / 1e3:+.2f} ms ({share:+.2f}% of the baseline's span): time "
                     "the GPU waited on the host, which no kernel delta holds")
    return lines
