"""The real-engine tier (vllm_gpu): the output gate on the real vLLM, both arms, through the host runtime.

Seeded weights at the model's init scale (a checkpoint written from the shipped qwen2.5-0.5b config), a fixed
prompt set, greedy with top logprobs: the logits must not be flat, the custom arm must route, and the two arms
must agree by vLLM's own rule (see workbench/bench/gate.py).
"""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from workbench.bench import plan, session
from workbench.config import Settings
from workbench.runtime import HostRuntime

pytestmark = pytest.mark.vllm_gpu

ROOT = Path(__file__).resolve().parents[2]


def test_the_output_gate_compares_real_logits():
    results_dir = ROOT / "results" / "vllm-gpu-tier"
    runtime = HostRuntime(Settings.from_mapping(ROOT, {"results": str(results_dir), "runtime": "host",
                                                       "python": sys.executable}))
    spec = plan.BenchSpec(model="qwen2.5-0.5b", compile_cache="shared", gate_prompts=8, gate_tokens=16)
    name = plan.session_name(spec.model) + "-gate"
    session_dir = results_dir / name
    session_dir.mkdir(parents=True)
    setup = session.model_setup(ROOT, results_dir, str(results_dir), replace(spec, weights="dummy"))
    gate = session.run_gate(runtime, ROOT, results_dir, session_dir, spec, setup, {})
    assert gate["valid"], gate
    assert gate["top1_margin_nats"] > 1.0  # seeded weights at init scale: not the flat dummy logits
    assert gate["custom_kernel_calls"]["custom"] > 0 and gate["custom_kernel_calls"]["baseline"] == 0
    assert json.loads((session_dir / plan.GATE / "result.json").read_text()) == gate
