"""Which engine step took which request: the paired driver's request stamps (engine_ab.py --timeline), read back.

Why: streamed, a generate's first engine step takes whichever of the batch's requests have reached the engine
core, and the rest wait for later steps; on the H200 an iteration cut that way took up to 10% longer than one
whose first step held the whole batch, and one arm's engine drew such cuts more often than the other's. The
iteration times alone cannot say why. The stamps can: per timed generate and request, when the front end made
it (arrival), when the engine core queued it, the step that scheduled it, its first and last token, all in
seconds from the generate's start. From them, per arm:

- the cut: how many requests each prefill step took, in order ("8", "6+2"), and how often each cut came;
- how long the front end took to hand the batch over (last request queued), and how long the engine core's
  first step waited after the first request was queued: a core that steps sooner takes a smaller first bite;
- the iteration time by cut (median), so a cut's cost is measured, not assumed.
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
    scheduled = [r[SCHEDULED] for r in rows]
    return {"cut": "+".join(str(n) for n in cut(rows)),
            "last_queued_ms": max(queued) * 1e3,
            "first_step_wait_ms": (min(scheduled) - min(queued)) * 1e3,
            "prefill_done_ms": max(r[FIRST] for r in rows) * 1e3}


def arm_summary(iterations: list[list[list[float]] | None], seconds: list[float]) -> dict[str, Any] | None:
    """Per arm, over its stamped iterations (``seconds``: the same iterations' times, in the same order)."""
    shapes = [(iteration(rows), t) for rows, t in zip(iterations, seconds, strict=False) if rows]
    if not shapes:
        return None
    count = max(len(rows) for rows in iterations if rows)  # the batch: a whole first step took all of it
    by_cut: dict[str, list[float]] = {}
    for shape, t in shapes:
        by_cut.setdefault(shape["cut"], []).append(t)
    whole = str(count)
    return {
        "iterations": len(shapes),
        "cuts": dict(Counter(s["cut"] for s, _ in shapes).most_common()),
        "whole_first_step": sum(1 for s, _ in shapes if s["cut"] == whole),
        "median_s_by_cut": {c: round(median(ts), 5) for c, ts in sorted(by_cut.items(), key=lambda kv: -len(kv[1]))},
        "last_queued_ms": round(median([s["last_queued_ms"] for s, _ in shapes]), 3),
        "first_step_wait_ms": round(median([s["first_step_wait_ms"] for s, _ in shapes]), 3),
        "prefill_done_ms": round(median([s["prefill_done_ms"] for s, _ in shapes]), 3),
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
    cuts = ", ".join(f"{c} ×{n} ({s['median_s_by_cut'][c] * 1e3:.1f} ms)" for c, n in s["cuts"].items())
    return (f"{arm}: first step took the whole batch in {s['whole_first_step']}/{s['iterations']} iterations; "
            f"cuts {cuts}; batch queued by {s['last_queued_ms']:.2f} ms, first step {s['first_step_wait_ms']:.2f} ms "
            f"after the first request, every first token by {s['prefill_done_ms']:.1f} ms (medians)")
