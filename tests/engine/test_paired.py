"""The real-engine tier (vllm_gpu): the paired driver on the real vLLM, on a GPU.

Two rounds of three engines in one process (baseline, control, custom), each engine core forked from that
process with its own arm's switch. What only the real engine can show:
- every custom engine routes and no baseline or control engine does, although vLLM loaded the plugin once,
  in the front end, with another arm's switch (on the H200 the custom engine made 0 calls until the plugin
  decided per layer);
- each round's engines let go of their memory before the next round's start (vLLM 0.24's LLMEngine has no
  shutdown(); three engines at 0.28 of the GPU each leave no room for a fourth);
- the session's own A/A (control/baseline) is judged beside the A/B;
- with whole-batch admission (the driver's default) every timed generate's first engine step schedules the whole
  batch, as vLLM's own request stamps show (--timeline).
About 5 minutes on the H200 (the first round compiles). Results stay in results/vllm-gpu-tier/.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from workbench.bench import plan, session
from workbench.config import Settings
from workbench.runtime import HostRuntime

pytestmark = pytest.mark.vllm_gpu

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def outcome():
    results_dir = ROOT / "results" / "vllm-gpu-tier"
    settings = Settings.from_mapping(ROOT, {"results": str(results_dir), "runtime": "host",
                                            "python": sys.executable})
    spec = plan.BenchSpec(model="qwen2.5-0.5b", mode="latency", repeats=2, iters=6, warmup_iters=1,
                          driver="paired", gate=False, timeline=True)
    return session.run_session(HostRuntime(settings), ROOT, plan.session_name(spec.model) + "-paired", spec,
                               quiet=False)


def test_every_round_routes_only_in_the_custom_engine(outcome):
    assert outcome.validity.valid, outcome.validity.reasons
    by_arm = {arm: [r for r in outcome.records if r.arm == arm] for arm in plan.PAIRED_ARMS}
    assert [len(v) for v in by_arm.values()] == [2, 2, 2]  # both rounds of every arm: no engine failed to start
    assert all(r.counts["total_calls"] > 0 for r in by_arm["custom"])
    assert all(r.counts["total_calls"] == 0 for r in by_arm["baseline"] + by_arm[plan.CONTROL])


def test_the_session_judges_the_ab_beside_its_own_aa(outcome):
    import json

    paired = json.loads(outcome.summary_path.read_text())["paired"]["latency"]
    assert paired["rounds"] == 2 and paired["control"]["rounds"] == 2
    assert paired["floor_pct"] >= paired["control"]["aa_floor_pct"]


def test_whole_admission_prefills_every_batch_in_one_step(outcome):
    """vLLM's request stamps (RequestOutput.metrics with its stats on): all 8 requests of every timed generate of
    every arm were scheduled by one step, after all of them were queued."""
    import json

    data = json.loads((outcome.summary_path.parent / "runs" / "paired-latency.json").read_text())
    assert data["admission"] == "whole" and data["timeline"]
    for rnd in data["rounds"]:
        for arm, iterations in rnd["timeline"].items():
            assert len(iterations) == 6 and all(rows is not None for rows in iterations), (arm, "not stamped")
            for rows in iterations:
                assert len(rows) == 8 and len({r[2] for r in rows}) == 1, (arm, rows)
                assert max(r[1] for r in rows) <= rows[0][2], (arm, "scheduled before the last request was queued")
    steps = json.loads(outcome.summary_path.read_text())["paired"]["latency"]["timeline"]
    assert all(s["cuts"] == {"8": 12} for s in steps.values()), steps
