"""The lines `invoke bench` prints under a session's table (workbench/bench/report.py summary_lines), read from
sessions the H200 wrote: the timeline's first-step lengths the results README quotes come from these stamps."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from workbench.bench import report, timeline

TIMELINE = Path(__file__).resolve().parents[2] / "docs" / "results" / "engine_h200_x2" / "timeline"


def _session(name: str) -> Path:
    found = sorted(TIMELINE.glob(f"*-{name}"))
    assert found, f"no committed session *-{name} under {TIMELINE}"
    return found[0]


def test_a_committed_sessions_summary_reads_as_lines():
    summary = json.loads((_session("plugin-direct") / "summary.json").read_text())
    lines = report.summary_lines(summary)
    text = [line for _, line in lines]
    ratio = "latency (paired): time custom/baseline 0.9978 [0.9856–1.0161] over 1 rounds"
    assert any(t.startswith(ratio) for t in text)
    assert any(t.startswith("latency (paired) steps, custom: first step took the whole batch in 0/12") for t in text)
    assert any("A/A in the same rounds, control/baseline 0.9936" in t for t in text)
    assert any(t.startswith("latency: the dispatch table predicts time custom/baseline 1.0000") for t in text)
    assert all(style in ("", "yellow") for style, _ in lines)


@pytest.mark.parametrize(("name", "custom_ms", "baseline_ms"), [("plugin-direct", 29.6, 31.3),
                                                                 ("plugin-custom_op", 51.0, 24.9)])
def test_the_first_step_of_a_2_6_cut_as_the_readme_quotes_it(name, custom_ms, baseline_ms):
    data = json.loads((_session(name) / "runs" / "paired-latency.json").read_text())
    arms = timeline.summary(data)
    assert arms["custom"]["first_step_ms_by_cut"]["2+6"] == pytest.approx(custom_ms, abs=0.5)
    assert arms["baseline"]["first_step_ms_by_cut"]["2+6"] == pytest.approx(baseline_ms, abs=0.5)
    # the same hand-over in every arm: the front end gives each engine its batch within ~2 ms
    assert all(a["handed_over_ms"] < 3.0 for a in arms.values())
