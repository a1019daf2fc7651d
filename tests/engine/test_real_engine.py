"""The real-engine tier (vllm_gpu): bench.ab through the host runtime on the real vLLM, on a GPU.

One session of a shipped config (qwen2.5-0.5b: a model folder with a generated tokenizer, dummy weights),
both modes, both arms, one shared compile cache:
- the plugin route runs in vLLM's engine process (custom calls in every custom run, none in the baseline);
- the switch keys vLLM's compile cache: the custom run follows the baseline run on the same cache root and
  still makes custom calls, from its own cache entry;
- every planned flag did what the plan says on the installed release (the latency run timed exactly
  --num-iters iterations; throughput prompts have exactly --input-len tokens).
The output gate is tests/engine/test_gate.py: each vLLM start costs ~85 s on the H200 host (imports in two
processes, compilation, graph capture), so the four runs here and the gate's two fit one 10-minute device
call each. Results stay in results/vllm-gpu-tier/ for the record.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from workbench.bench import plan, session
from workbench.config import Settings
from workbench.runtime import HostRuntime

pytestmark = pytest.mark.vllm_gpu

ROOT = Path(__file__).resolve().parents[2]
PROMPTS, INPUT, OUTPUT, ITERS = 64, 128, 128, 5


@pytest.fixture(scope="module")
def outcome():
    results_dir = ROOT / "results" / "vllm-gpu-tier"
    settings = Settings.from_mapping(ROOT, {"results": str(results_dir), "runtime": "host",
                                            "python": sys.executable})
    spec = plan.BenchSpec(model="qwen2.5-0.5b", mode="both", repeats=1, iters=ITERS, warmup_iters=2,
                          num_prompts=PROMPTS, input_len=INPUT, output_len=OUTPUT, compile_cache="shared",
                          gate_prompts=8, gate_tokens=16)
    name = plan.session_name(spec.model)
    return session.run_session(HostRuntime(settings), ROOT, name, spec, quiet=False), results_dir


def test_the_plugin_routes_in_the_engine_process_and_only_in_the_custom_arm(outcome):
    out, _ = outcome
    assert out.validity.valid, out.validity.reasons
    assert all(c and c > 0 for c in out.validity.custom_calls), out.validity.custom_calls
    assert out.validity.baseline_calls == (0, 0)
    custom = [r for r in out.records if r.arm == "custom"]
    assert all(r.counts["processes_with_custom_kernels"] >= 1 for r in custom)
    # Only layers with a tuned non-cuBLAS winner on this GPU route; the others went back to vLLM's GEMM.
    assert all(r.counts["routed_layers"] > 0 for r in custom), [r.counts for r in custom]


def test_the_switch_keys_the_compile_cache(outcome):
    out, results_dir = outcome
    # Same VLLM_CACHE_ROOT for both arms, the custom run after the baseline run: two cache entries.
    assert {r.env["VLLM_CACHE_ROOT"] for r in out.records} == {str(results_dir / ".vllm-cache" / "shared")}
    entries = list((results_dir / ".vllm-cache" / "shared" / "torch_compile_cache").iterdir())
    assert len(entries) >= 2, entries


def test_every_flag_did_what_the_plan_says(outcome):
    out, _ = outcome
    env = json.loads((out.session_dir / "env.json").read_text())
    assert "--random-input-len" in env["vllm_bench_flags"]["throughput"]  # probed from the installed release
    for r in out.records:
        assert r.error == "", r.error
        data = json.loads((out.session_dir / "runs" / f"{r.run_id}.json").read_text())
        if r.mode == "latency":
            assert len(data["latencies"]) == ITERS and len(r.samples) == ITERS
        else:
            assert data["num_requests"] == PROMPTS
            assert data["total_num_tokens"] == PROMPTS * (INPUT + OUTPUT)  # not the random dataset's 1024
        assert r.gpu.get("sm_clock_mhz_median"), r.gpu
