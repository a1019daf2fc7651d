"""The decode proxy: config resolution, a real transformers model on CPU (fp32, tiny), routing through
custom_kernels.unquantized_gemm (counted), correctness check, JSON; the shipped configs build on the gpu tier."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from workbench.bench import proxy as decode_proxy

ROOT = Path(__file__).resolve().parents[2]
TINY = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 64, "intermediate_size": 96,
        "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 128,
        "max_position_embeddings": 64, "rms_norm_eps": 1e-5, "tie_word_embeddings": False}


def test_shipped_configs_resolve_by_name():
    names = decode_proxy.shipped_configs()
    assert {"qwen2.5-0.5b", "tinyllama-1.1b", "llama-3-8b"} <= set(names)
    assert decode_proxy.resolve_config("Qwen2.5-0.5B").parent.name == "qwen2.5-0.5b"
    assert decode_proxy.resolve_config("Qwen/Qwen2.5-0.5B").parent.name == "qwen2.5-0.5b"
    cfg = json.loads(decode_proxy.resolve_config("llama-3-8b").read_text())
    assert (cfg["hidden_size"], cfg["intermediate_size"], cfg["num_key_value_heads"]) == (4096, 14336, 8)
    with pytest.raises(FileNotFoundError, match=r"qwen2\.5-0\.5b"):
        decode_proxy.resolve_config("no-such-model")


def test_tiny_model_runs_on_cpu_and_routes_every_linear(tmp_path):
    (tmp_path / "tiny").mkdir()
    (tmp_path / "tiny" / "config.json").write_text(json.dumps(TINY))
    out = tmp_path / "proxy.json"
    env_path = f"{ROOT / 'custom_kernels'}"
    done = subprocess.run(
        [sys.executable, "-m", "workbench.bench.proxy", "--model", str(tmp_path / "tiny"), "--out", str(out),
         "--device", "cpu", "--modes", "eager", "--batches", "1,4", "--prefill-tokens", "16", "--rounds", "4",
         "--iters", "2", "--warmup", "1"],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
        env={**__import__("os").environ, "PYTHONPATH": env_path})
    assert done.returncode == 0, done.stderr[-2000:]
    data = json.loads(out.read_text())
    assert data["valid"] is True and data["dtype"] == "float32"
    assert data["linears_routed"] == 2 * 7 + 1  # q,k,v,o,gate,up,down per layer + lm_head
    assert data["correctness"]["passed"] and data["correctness"]["ref"] == "fp32"
    assert data["correctness"]["custom_max_abs_err"] <= 2 * data["correctness"]["cublas_max_abs_err"] + 1e-5
    assert data["custom_kernel_calls"]["correctness_check"] == data["linears_routed"]
    assert data["custom_kernel_calls"]["timed_custom_arm"] > 0
    cases = {(r["phase"], r["m"]) for r in data["results"]}
    assert cases == {("prefill", 16), ("decode", 1), ("decode", 4)}
    for r in data["results"]:
        assert r["error"] == ""
        assert len(r["arms"]["cublas"]["rounds_ms"]) == len(r["arms"]["custom"]["rounds_ms"]) == 4
        assert r["speedup"] > 0 and 0.0 <= r["p_value"] <= 1.0
        assert r["within_noise"] == decode_proxy.judge(r["arms"]["cublas"]["rounds_ms"],
                                                       r["arms"]["custom"]["rounds_ms"])[2]
    # The environment is the bench sessions' capture (workbench/guest/bench_env.py), field for field.
    env = data["env"]
    assert env["transformers"] and env["device"] == "cpu" and env["torch"]["cuda_available"] is False
    assert {"time_utc", "host", "python", "platform", "gpus", "env"} <= set(env)
    assert env["custom_kernels"]["path"] == str(ROOT / "custom_kernels" / "src" / "custom_kernels")


def test_judge_needs_separation_and_a_real_effect():
    base = [10.0, 10.01, 10.02, 10.005, 10.015, 10.012]
    # Completely separated rounds but 0.5% apart: significant, yet under the measured A/A floor.
    p, significant, within = decode_proxy.judge(base, [v * 0.995 for v in base])
    assert significant and within and p < 0.01
    p, significant, within = decode_proxy.judge(base, [v * 0.9 for v in base])  # 10% faster custom arm
    assert significant and not within
    assert decode_proxy.judge(base, list(reversed(base)))[2]  # same values: nothing to see


def test_wrong_kernel_fails_the_correctness_check(tmp_path):
    """A custom GEMM that is off by more than rounding must make the run invalid before any timing."""
    import torch
    import torch.nn.functional as F

    (tmp_path / "config.json").write_text(json.dumps({**TINY, "num_hidden_layers": 1}))
    model = decode_proxy.build_model(tmp_path / "config.json", torch.float32, torch.device("cpu"))
    decode_proxy.route_linears(model, lambda layer, x, w, b=None: F.linear(x, w * 1.01, b))
    bad = decode_proxy.check_outputs(model, TINY["vocab_size"], torch.device("cpu"))
    assert not bad["passed"] and bad["custom_max_abs_err"] > 2 * bad["cublas_max_abs_err"]
    decode_proxy.route_linears(model, lambda layer, x, w, b=None: F.linear(x, w, b))
    assert decode_proxy.check_outputs(model, TINY["vocab_size"], torch.device("cpu"))["passed"]


def test_bad_model_is_one_line_exit_2(tmp_path):
    done = subprocess.run([sys.executable, "-m", "workbench.bench.proxy", "--model", "nope"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and done.stderr.startswith("error: no model config 'nope'")


@pytest.mark.gpu
@pytest.mark.parametrize("model", ["qwen2.5-0.5b", "tinyllama-1.1b"])
def test_shipped_config_on_gpu(tmp_path, model):
    data = decode_proxy.run_proxy(model, tmp_path / "p.json", modes=("cudagraph",), batches=(1, 16),
                                  prefill_tokens=256, rounds=4, iters=5, layers=4)
    assert data["valid"], data["correctness"]
    assert all(not r["error"] for r in data["results"]), [r["error"] for r in data["results"]]


def test_compile_mode_refuses_a_hook_that_recompiles_every_call(tmp_path):
    """A GEMM hook that bumps a Python counter inside traced code makes Dynamo guard on the counter's value:
    every call recompiles, then falls back to eager. The proxy must report that, not time it."""
    import torch
    import torch.nn.functional as F

    (tmp_path / "config.json").write_text(json.dumps({**TINY, "num_hidden_layers": 1}))
    model = decode_proxy.build_model(tmp_path / "config.json", torch.float32, torch.device("cpu"))
    counts: dict[str, int] = {}

    def counting_gemm(layer, x, weight, bias=None):
        counts[layer.prefix] = counts.get(layer.prefix, 0) + 1
        return F.linear(x, weight, bias)

    decode_proxy.route_linears(model, counting_gemm)
    torch._dynamo.reset()
    res = decode_proxy.run_case(model, "compile", "decode", 2, 1, TINY["vocab_size"], torch.device("cpu"),
                                rounds=2, iters=1, warmup=2)
    assert "recompiles on every call" in res.error and not res.arms
    res = decode_proxy.run_case(model, "eager", "decode", 2, 1, TINY["vocab_size"], torch.device("cpu"),
                                rounds=2, iters=1, warmup=1)
    assert res.error == "" and counts  # the same hook is fine in eager mode, and it ran
