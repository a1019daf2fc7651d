"""Which engine step took which request: the paired driver's request stamps (engine_ab.py --timeline), read back.

Why: streamed, a generate's first engine step takes whichever of the batch's requests have reached the engine
core, and the rest wait for later steps; on the H200 an iteration cut that way took up to 10% longer than one
whose first step held the whole batch, and one arm's engine drew such cuts more often than the other's. The
iteration times alone cannot say why. The stamps can: per timed generate and request, when the front end made
it (arrival), when the engine core queued it, the step that scheduled it, its first and last token, all in
seconds from the generate's start. From them, per arm:

- the cut: how many requests each prefill step took, in order ("8", "6+2"), and how often each cut came;
- how long the front end took to hand the batch over (last arrival), when the engine core queued the first
  request, and how long its first step waited after that: a core that steps sooner takes a smaller first bite.
  (The core queues requests only between steps, so the rest of a streamed batch is queued when the first step
  ends: a late "queued" there is a long first step, not a slow hand-over.);
- the iteration time by cut, and by cut how long the first step took (its start to the next step's start): on the
  H200 the same cut cost a custom engine 14–24 ms more, all of it in that first step (custom_kernels/NOTES.md).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from workbench.bench.stats import median

# One stamped request: [arrival, queued, scheduled, first token, last token], seconds from the generate's start.
ARRIVAL, QUEUED, SCHEDULED, FIRST, LAST = range(5)


def cut(rows: list[list[float]]) -> list[int]:
    """Requests per prefill step, in step order: requests scheduled by one step share its stamp."""
    steps = Counter(row[SCHEDULED] for row in rows)
    return [steps[t] for t in sorted(steps)]


def iteration(rows: list[list[float]]) -> dict[str, Any]:
    """One timed generate's shape, times in ms from its start."""
    queued = [r[QUEUED] for r in rows]
    steps = sorted({r[SCHEDULED] for r in rows})
    return {"cut": "+".join(str(n) for n in cut(rows)),
            "handed_over_ms": max(r[ARRIVAL] for r in rows) * 1e3,
            "first_queued_ms": min(queued) * 1e3,
            "first_step_wait_ms": (steps[0] - min(queued)) * 1e3,
            "first_step_ms": (steps[1] - steps[0]) * 1e3 if len(steps) > 1 else None,
            "prefill_done_ms": max(r[FIRST] for r in rows) * 1e3}


def arm_summary(iterations: list[list[list[float]] | None], seconds: list[float]) -> dict[str, Any] | None:
    """Per arm, over its stamped iterations (``seconds``: the same iterations' times, in the same order)."""
    shapes = [(iteration(rows), t) for rows, t in zip(iterations, seconds, strict=False) if rows]
    if not shapes:
        return None
    count = max(len(rows) for rows in iterations if rows)  # the batch: a whole first step took all of it
    by_cut: dict[str, list[float]] = {}
    first_step: dict[str, list[float]] = {}
    for shape, t in shapes:
        by_cut.setdefault(shape["cut"], []).append(t)
        if shape["first_step_ms"] is not None:
            first_step.setdefault(shape["cut"], []).append(shape["first_step_ms"])
    whole = str(count)
    order = sorted(by_cut, key=lambda c: -len(by_cut[c]))

    def med(key: str) -> float:
        return round(median([s[key] for s, _ in shapes]), 3)

    return {
        "iterations": len(shapes),
        "cuts": dict(Counter(s["cut"] for s, _ in shapes).most_common()),
        "whole_first_step": sum(1 for s, _ in shapes if s["cut"] == whole),
        "median_s_by_cut": {c: round(median(by_cut[c]), 5) for c in order},
        "first_step_ms_by_cut": {c: round(median(first_step[c]), 2) for c in order if c in first_step},
        "handed_over_ms": med("handed_over_ms"),
        "first_queued_ms": med("first_queued_ms"),
        "first_step_wait_ms": med("first_step_wait_ms"),
        "prefill_done_ms": med("prefill_done_ms"),
    }


def summary(data: dict[str, Any]) -> dict[str, Any] | None:
    """Per arm, over every round of a paired run's output (engine_ab.py --out) that was stamped; None if none was
    (--timeline off, or a vLLM that does not stamp requests)."""
    if not data.get("timeline"):
        return None
    stamped: dict[str, list] = {}
    times: dict[str, list[float]] = {}
    for rnd in data.get("rounds", []):
        for arm, its in (rnd.get("timeline") or {}).items():
            stamped.setdefault(arm, []).extend(its)
            times.setdefault(arm, []).extend(float(t) for t in rnd.get("seconds", {}).get(arm, []))
    out = {arm: s for arm in stamped if (s := arm_summary(stamped[arm], times[arm])) is not None}
    return out or None


def describe(arm: str, s: dict[str, Any]) -> str:
    """One line per arm for the session's report."""
    first = s.get("first_step_ms_by_cut", {})
    cuts = ", ".join(f"{c} ×{n} ({s['median_s_by_cut'][c] * 1e3:.1f} ms"
                     + (f", first step {first[c]:.1f} ms)" if c in first else ")") for c, n in s["cuts"].items())
    if "handed_over_ms" in s:
        arrival = (f"batch handed over by {s['handed_over_ms']:.2f} ms, first request queued at "
                   f"{s['first_queued_ms']:.2f} ms, first step {s['first_step_wait_ms']:.2f} ms after it")
    else:  # a summary written before the hand-over was read (its "last queued" was the first step's end)
        arrival = f"first step {s['first_step_wait_ms']:.2f} ms after the first request"
    return (f"{arm}: first step took the whole batch in {s['whole_first_step']}/{s['iterations']} iterations; "
            f"cuts {cuts}; {arrival}, every first token by {s['prefill_done_ms']:.1f} ms (medians)")
