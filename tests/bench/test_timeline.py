"""The timeline's reading of request stamps (workbench/bench/timeline.py): cuts, their counts and costs, the waits.
The stamps themselves come from a real engine process in tests/bench/test_session.py (the stand-in) and
tests/engine/test_paired.py (vLLM on a GPU)."""

from __future__ import annotations

import pytest

from workbench.bench import timeline


def _rows(cut: list[int], queued_every_ms: float, first_step_ms: float) -> list[list[float]]:
    """A batch queued one request every ``queued_every_ms``; the first step ``first_step_ms`` after the first
    request took ``cut[0]`` requests, each later step 20 ms after the one before took the next ``cut[i]``."""
    rows, i = [], 0
    for step, n in enumerate(cut):
        scheduled = (first_step_ms + 20.0 * step) / 1e3
        for _ in range(n):
            queued = i * queued_every_ms / 1e3
            rows.append([queued - 0.0002, queued, scheduled, scheduled + 0.015, 0.4])
            i += 1
    return rows


def test_cuts_their_counts_costs_and_waits():
    its = [None, _rows([8], 0.3, 3.0), _rows([6, 2], 0.3, 1.5), _rows([6, 2], 0.3, 1.6)]  # one not stamped
    s = timeline.arm_summary(its, [0.5, 0.400, 0.430, 0.420])
    assert s["iterations"] == 3 and s["cuts"] == {"6+2": 2, "8": 1} and s["whole_first_step"] == 1
    assert s["median_s_by_cut"] == {"6+2": 0.425, "8": 0.4}
    assert s["first_step_ms_by_cut"] == {"6+2": 20.0}  # a whole first step has no next step to end it
    assert s["handed_over_ms"] == 1.9 and s["first_queued_ms"] == 0.0 and s["first_step_wait_ms"] == 1.6
    assert s["prefill_done_ms"] == 36.5  # median of 3 + 15, 1.5 + 20 + 15 and 1.6 + 20 + 15 ms
    line = timeline.describe("custom", s)
    assert line.startswith("custom: first step took the whole batch in 1/3 iterations; cuts 6+2 ×2 (425.0 ms, "
                           "first step 20.0 ms), 8 ×1 (400.0 ms); batch handed over by 1.90 ms, first request "
                           "queued at 0.00 ms, first step 1.60 ms after it")


def test_a_long_first_step_is_told_from_a_slow_hand_over():
    """The core queues the rest of a streamed batch only when its first step ends: the first step's length per cut
    is what differs when one engine runs the same cut slower (the H200's custom engines: 43-51 against 17-34 ms)."""
    slow, fast = _rows([2, 6], 0.2, 1.0), _rows([2, 6], 0.2, 1.0)
    for row in slow[2:]:  # the same hand-over, a first step 25 ms longer
        row[timeline.SCHEDULED] += 0.025
    a, b = timeline.arm_summary([fast], [0.41]), timeline.arm_summary([slow], [0.435])
    assert a["handed_over_ms"] == b["handed_over_ms"] and a["first_queued_ms"] == b["first_queued_ms"]
    assert b["first_step_ms_by_cut"]["2+6"] - a["first_step_ms_by_cut"]["2+6"] == pytest.approx(25.0)


def test_a_run_without_stamps_has_no_timeline():
    assert timeline.summary({"timeline": False, "rounds": [{"seconds": {"custom": [0.4]}}]}) is None
    unstamped = {"timeline": True, "rounds": [{"seconds": {"custom": [0.4]}, "timeline": {"custom": [None]}}]}
    assert timeline.summary(unstamped) is None  # a vLLM whose outputs carry no metrics
    two_rounds = {"timeline": True, "rounds": [
        {"seconds": {"custom": [0.41]}, "timeline": {"custom": [_rows([4, 4], 0.3, 1.0)]}},
        {"seconds": {"custom": [0.40]}, "timeline": {"custom": [_rows([8], 0.3, 3.0)]}}]}
    assert timeline.summary(two_rounds)["custom"]["cuts"] == {"4+4": 1, "8": 1}
