"""The real-engine tier at TP=2 (vllm_gpu, two GPUs): the paired driver with every engine split over two ranks.

What only the real engine can show: vLLM's multiprocessing executor starts one worker process per rank, each
loads the plugin and routes, and each worker's counter dump names its rank; three engines (baseline, control,
custom) each hold their share of *both* GPUs at once. Every layer routes (VLLM_CUSTOM_GEMM_ROUTE=all, in every
arm; the switch keeps the baseline's off), so the test does not depend on the table holding TP=2 shapes.
Skipped where fewer than two GPUs are visible. Results stay in results/vllm-gpu-tier-tp2/.
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
    import os

    import torch

    if torch.cuda.device_count() < 2:
        pytest.skip(f"needs 2 CUDA devices, {torch.cuda.device_count()} visible (the 2-GPU host runs it)")
    results_dir = ROOT / "results" / "vllm-gpu-tier-tp2"
    settings = Settings.from_mapping(ROOT, {"results": str(results_dir), "runtime": "host", "python": sys.executable})
    spec = plan.BenchSpec(model="qwen2.5-0.5b", mode="latency", repeats=2, iters=6, warmup_iters=1, tp=2,
                          driver="paired", gate=False)
    before = os.environ.get("VLLM_CUSTOM_GEMM_ROUTE")
    os.environ["VLLM_CUSTOM_GEMM_ROUTE"] = "all"
    try:
        return session.run_session(HostRuntime(settings), ROOT, plan.session_name(spec.model) + "-paired-tp2", spec,
                                   quiet=False)
    finally:
        if before is None:
            os.environ.pop("VLLM_CUSTOM_GEMM_ROUTE", None)
        else:
            os.environ["VLLM_CUSTOM_GEMM_ROUTE"] = before


def test_every_rank_of_every_custom_engine_routes(outcome):
    assert outcome.validity.valid, outcome.validity.reasons
    by_arm = {arm: [r for r in outcome.records if r.arm == arm] for arm in plan.PAIRED_ARMS}
    assert [len(v) for v in by_arm.values()] == [2, 2, 2]  # both rounds of every arm: every engine started
    for r in by_arm["custom"]:
        assert r.counts["world_size"] == 2 and set(r.counts["rank_calls"]) == {"0", "1"}, r.counts
        assert all(n > 0 for n in r.counts["rank_calls"].values())
    assert all(r.counts["total_calls"] == 0 for r in by_arm["baseline"] + by_arm[plan.CONTROL])
