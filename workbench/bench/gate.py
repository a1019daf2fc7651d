"""The output gate: both arms must generate the same text, within a stated tolerance, before their
speed is compared. A fast kernel that changes the model's output is a wrong kernel.

Each arm runs a fixed, seeded prompt set greedily through the real engine (workbench/guest/engine_gate.py)
on weights at a realistic scale: vLLM's dummy weights (uniform in ±1e-3) give flat logits, under which any
two arms "agree" trivially, so the gate refuses flat logits. The tolerance is vLLM's own rule for
comparing two implementations (tests' check_logprobs_close): per prompt, greedy tokens agree up to the
first divergence, and there each arm's token is among the other's top logprobs; past a divergence the
two continuations are not comparable. On the agreeing prefix the chosen tokens' logprobs must also agree
within LOGPROB_TOL.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import asdict, dataclass
from typing import Any

LOGPROB_TOL = 0.5  # nats, chosen token on the agreeing prefix: bf16 GEMMs that accumulate differently
FLAT_MARGIN = 0.5  # nats the top token must stand above a uniform guess, on average, for a gate to mean anything
TOLERANCE = (f"greedy tokens equal up to the first divergence, there each arm's token in the other's top "
             f"logprobs; chosen-token logprobs within {LOGPROB_TOL} nats before it; logits not flat (top token "
             f"{FLAT_MARGIN} nats above uniform on average)")


@dataclass(frozen=True)
class GateResult:
    valid: bool
    reason: str
    prompts: int
    identical: int  # prompts whose tokens agree all the way
    diverged_within_top: int  # diverged, each arm's token in the other's top logprobs there
    failed: int  # diverged with a token outside the other's top logprobs
    first_divergence_median: float | None  # generated position of the first divergence (diverged prompts)
    max_logprob_diff: float  # chosen tokens, before any divergence
    top1_margin_nats: float  # mean top-token logprob above log(1/vocab): how far from flat the logits are
    tolerance: str = TOLERANCE

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _top(position: dict[str, float]) -> dict[int, float]:
    return {int(t): float(lp) for t, lp in position.items()}


def compare_outputs(a: dict[str, Any], b: dict[str, Any]) -> GateResult:
    """Judge two engine_gate.py files (arm A, arm B) made with the same prompts."""
    outs_a, outs_b = a.get("outputs") or [], b.get("outputs") or []
    if not outs_a or len(outs_a) != len(outs_b):
        return GateResult(False, f"the arms answered {len(outs_a)} and {len(outs_b)} prompts", len(outs_a), 0, 0,
                          0, None, math.nan, math.nan)
    uniform = -math.log(int(a.get("vocab_size") or 1))
    margins, diffs, divergences = [], [0.0], []
    identical = within = failed = 0
    for ra, rb in zip(outs_a, outs_b, strict=True):
        ta, tb = ra["tokens"], rb["tokens"]
        la, lb = [_top(p) for p in ra["logprobs"]], [_top(p) for p in rb["logprobs"]]
        margins += [max(p.values()) - uniform for p in la if p]
        first = next((i for i, (x, y) in enumerate(zip(ta, tb, strict=False)) if x != y), None)
        if first is None and len(ta) == len(tb):
            identical += 1
            upto = len(ta)
        else:
            first = min(len(ta), len(tb)) if first is None else first
            divergences.append(first)
            ok = first < len(la) and first < len(lb) and ta[first] in lb[first] and tb[first] in la[first]
            within += ok
            failed += not ok
            upto = first
        for i in range(min(upto, len(la), len(lb))):
            tok = ta[i]
            if tok in la[i] and tok in lb[i]:
                diffs.append(abs(la[i][tok] - lb[i][tok]))
    margin = statistics.fmean(margins) if margins else 0.0
    worst = max(diffs)
    reasons = []
    if margin < FLAT_MARGIN:
        reasons.append(f"the logits are flat (top token {margin:.3f} nats above uniform): the gate needs weights at "
                       "a realistic scale (--weights random), not vLLM's dummy ones")
    if failed:
        reasons.append(f"{failed} of {len(outs_a)} prompts diverged to a token outside the other arm's top "
                       f"{a.get('top', '?')} logprobs")
    if worst > LOGPROB_TOL:
        reasons.append(f"chosen-token logprobs differ by up to {worst:.3f} nats before any divergence "
                       f"(tolerance {LOGPROB_TOL})")
    return GateResult(
        valid=not reasons, reason="; ".join(reasons) or "outputs agree within the tolerance", prompts=len(outs_a),
        identical=identical, diverged_within_top=within, failed=failed,
        first_divergence_median=statistics.median(divergences) if divergences else None,
        max_logprob_diff=round(worst, 4), top1_margin_nats=round(margin, 3))
