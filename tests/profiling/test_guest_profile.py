"""The GPU host's side of the attribution: engine_ab.py's --profile-dir hook (workbench/guest/engine_profile.py)
profiles one generate per arm into <dir>/<arm>/, which the analysis reads back.

No vLLM engine runs on this CPU host, so a stand-in engine takes LLM's place: started with the arm's environment
(VLLM_USE_CUSTOM_GEMM routes its linears through custom_kernels' op, as the plugin does), it writes a real
torch.profiler trace into the profiler_config's folder between start_profile() and stop_profile(), as vLLM's
torch profiler does in its engine-core process."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from workbench.bench.kernels import import_custom_kernels  # noqa: E402
from workbench.profile.run import analyse_session  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "workbench" / "guest"))  # guest scripts import their siblings by name

import engine_profile  # noqa: E402


class StandInEngine:
    def __init__(self, config: dict):
        self.routed = os.environ.get("VLLM_USE_CUSTOM_GEMM") == "1"
        self.trace_dir = Path(config["torch_profiler_dir"])
        self.ck = import_custom_kernels(ROOT / "custom_kernels")
        self.w = torch.randn(96, 32)
        self.prof = None
        self.stopped = False

    def generate(self, batch, params, use_tqdm=False):
        x = torch.tensor(batch, dtype=torch.float32)
        for _ in range(params["max_tokens"]):
            x = torch.nn.functional.silu(self.ck.op.linear(x, self.w, None, "l") if self.routed else
                                         torch.nn.functional.linear(x, self.w))[:, :32]
        return x

    def start_profile(self):
        self.prof = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU])
        self.prof.__enter__()

    def stop_profile(self):
        self.prof.__exit__(None, None, None)
        self.prof.export_chrome_trace(str(self.trace_dir / f"rank0.{os.getpid()}.pt.trace.json"))


def test_one_profiled_generate_per_arm_lands_where_the_analysis_reads(tmp_path, monkeypatch):
    session = tmp_path / "20261130-090000-tiny"
    folder = session / "profile" / "latency"
    started, stopped = [], []

    def start_engine(args, env, extra):
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        started.append((env, extra))
        return StandInEngine(extra["profiler_config"])

    arms = {"baseline": {"VLLM_USE_CUSTOM_GEMM": "0", "VLLM_CACHE_ROOT": "/c/baseline"},
            "control": {"VLLM_USE_CUSTOM_GEMM": "0"},
            "custom": {"VLLM_USE_CUSTOM_GEMM": "1", "CUSTOM_KERNELS_COUNTS_FILE": "/r/latency-custom-r{round}.json"}}
    batch = [[0.1 * i] * 32 for i in range(4)]
    done = engine_profile.profile_arms(argparse.Namespace(mode="latency"), arms, batch, {"max_tokens": 3},
                                       str(folder), start_engine, stopped.append)
    assert list(done) == ["baseline", "custom"]  # the control is the baseline again: not profiled
    assert len(stopped) == 2  # every engine is stopped
    assert started[1][0]["CUSTOM_KERNELS_COUNTS_FILE"] == "/r/latency-custom-rprofile.json"
    config = started[0][1]["profiler_config"]
    assert config["profiler"] == "torch" and config["torch_profiler_dir"] == str(folder / "baseline")
    assert config["torch_profiler_use_gzip"] is False and config["torch_profiler_with_stack"] is False
    saved = json.loads((folder / "profile.json").read_text())
    assert saved["count"] == 4 and set(saved["arms"]) == {"baseline", "custom"}

    (session / "summary.json").write_text(json.dumps({"comparisons": []}))
    result, _, _ = analyse_session(session, "latency", None)
    cats = {r.category: r for r in result.rows}
    assert cats["GEMM ATen via op"].custom_calls >= 3 and cats["GEMM ATen via op"].baseline_calls == 0
    assert cats["GEMM ATen"].baseline_calls >= 3 and cats["GEMM ATen"].custom_calls == 0
    assert result.measured == {}  # no measured delta in this summary: the analysis says none, invents none
