"""The table's prediction of a vLLM run's GEMM time (pure arithmetic on a table and a config, CPU)."""

from __future__ import annotations

import pytest

from custom_kernels.dispatch import DispatchTable, shape_key
from custom_kernels.models import load_config, model_dims
from custom_kernels.predict import MAX_BATCHED_TOKENS, predict, steps


def test_steps_follow_vllms_scheduler_budget():
    # latency: one prefill step of batch x input tokens (logits for every sequence), then output_len - 1 decodes
    assert steps("latency", 8, 0, 128, 4) == [(1024, 8), (8, 8), (8, 8), (8, 8)]
    # a prompt load beyond the token budget is prefilled in chunks; logits come with the last chunk only
    chunks = steps("latency", 8, 0, 2048, 1)
    assert chunks == [(MAX_BATCHED_TOKENS, 0), (8 * 2048 - MAX_BATCHED_TOKENS, 8)]
    # throughput: waves of at most 256 running sequences
    assert steps("throughput", 0, 300, 16, 2) == [(256 * 16, 256), (256, 256), (44 * 16, 44), (44, 44)]


def test_prediction_prices_routed_winners_only():
    name, cfg = load_config("qwen2.5-0.5b")
    dims = model_dims(cfg, name)
    table = DispatchTable()
    entry = {"kernel": "triton_splitk", "us": 6.0, "cublas_us": 8.0}
    table.set_entries("GPU X", "bfloat16", {
        shape_key(896, 4864): {"8": entry, "1024": {"kernel": "cublas", "us": 50.0, "cublas_us": 50.0}},  # down_proj
        shape_key(151936, 896): {"8": entry},  # lm_head: a winner, but it never routes through the plugin
    }, {})
    got = predict(dims, table, "GPU X", "bfloat16", "latency", 8, 0, 128, 3)
    down = got["shapes"]["down_proj"]
    # prefill at M=1024 (cuBLAS both ways), two decodes at M=8 (the winner), every decoder layer
    assert down["routes"] and down["cublas_s"] == pytest.approx(dims.num_layers * (50 + 2 * 8) * 1e-6)
    assert got["saved_s"] == pytest.approx(dims.num_layers * 2 * 2.0 * 1e-6)
    assert not got["shapes"]["lm_head"]["routes"] and got["shapes"]["lm_head"]["custom_s"] == got["shapes"][
        "lm_head"]["cublas_s"]
    assert shape_key(1152, 896) in got["untimed_shapes"]  # qkv_proj: the table has no timing for it


def test_a_winner_the_bench_confirmed_is_priced_at_the_benchs_ratio():
    """The tune's speedup is the best of many noisy timings; a confirmed winner's bench ratio prices it instead."""
    name, cfg = load_config("qwen2.5-0.5b")
    dims = model_dims(cfg, name)
    table = DispatchTable()
    tuned = {"kernel": "triton_splitk", "us": 6.0, "cublas_us": 8.0}  # the tune: 1.33x
    table.set_entries("GPU X", "bfloat16", {
        shape_key(896, 4864): {"8": {**tuned, "bench_ratio": 1.0}},  # down_proj: a bench ran it at cuBLAS's speed
        shape_key(4864 * 2, 896): {"8": dict(tuned)},  # gate_up_proj: never benched, the tune's timing stands
    }, {})
    got = predict(dims, table, "GPU X", "bfloat16", "latency", 8, 0, 1, 3)  # 3 steps at M=8: 1-token prompts
    assert got["shapes"]["down_proj"]["custom_s"] == pytest.approx(got["shapes"]["down_proj"]["cublas_s"])
    assert got["saved_s"] == pytest.approx(dims.num_layers * 3 * 2.0 * 1e-6)  # gate_up_proj's 2 us a step
    assert got["winners_priced_by"] == {"bench": 1, "tune": 1}


def test_prediction_at_tp2_prices_the_rank_shapes(tmp_path, capsys):
    """At TP=2 the prediction looks up one rank's shapes (the table's TP=2 entries), not the whole model's."""
    from custom_kernels.predict import main

    name, cfg = load_config("llama-3-8b")
    dims = model_dims(cfg, name)
    table = DispatchTable()
    entry = {"kernel": "triton_splitk", "us": 30.0, "cublas_us": 40.0}
    table.set_entries("GPU X", "bfloat16", {shape_key(4096, 7168): {"8": entry, "8192": entry}}, {})  # down_proj/2
    got = predict(dims, table, "GPU X", "bfloat16", "latency", 8, 0, 128, 2, tp=2)
    assert got["tp"] == 2 and got["shapes"]["down_proj"]["shape"] == "4096x7168"
    assert got["saved_s"] == pytest.approx(dims.num_layers * 2 * 10.0 * 1e-6)  # prefill + one decode, 10 us each
    assert shape_key(4096, 14336) not in got["untimed_shapes"] and shape_key(14336, 4096) in got["untimed_shapes"]
    # a TP size vLLM can't split the model into: one line, exit 2
    assert main(["--model", "llama-3-8b", "--gpu", "GPU X", "--mode", "latency", "--input-len", "8",
                 "--output-len", "2", "--tp", "3"]) == 2
    assert capsys.readouterr().err.startswith("error: llama-3-8b: tensor-parallel size 3 must divide")


def test_the_routed_calls_outside_cuda_graphs_and_their_host_cost():
    """Prefill steps above vLLM's largest CUDA-graph size run the op's Python body once per routed layer; decode
    steps replay graphs and run none. Priced only when a host cost per call is given."""
    from custom_kernels.dispatch import read_table, table_path
    from custom_kernels.predict import CUDA_GRAPH_MAX_TOKENS

    name, cfg = load_config("llama-3-8b")
    dims = model_dims(cfg, name)
    table = read_table(table_path("NVIDIA H200"))
    routed = sum(1 for layer in ("qkv_proj", "o_proj", "gate_up_proj", "down_proj")
                 if predict(dims, table, "NVIDIA H200", "bfloat16", "latency", 8, 0, 512, 4)["shapes"][layer]["routes"])
    one_prefill = predict(dims, table, "NVIDIA H200", "bfloat16", "latency", 8, 0, 512, 64, host_us=8.0)
    assert one_prefill["routed_calls_outside_graphs"] == routed * dims.num_layers  # 8 x 512 tokens: one eager step
    assert one_prefill["host_s"] == pytest.approx(routed * dims.num_layers * 8e-6)
    small = predict(dims, table, "NVIDIA H200", "bfloat16", "latency", 1, 0, CUDA_GRAPH_MAX_TOKENS, 64)
    assert small["routed_calls_outside_graphs"] == 0 and small["host_s"] is None  # fits a CUDA graph
