"""plan-memory arithmetic on the shipped model configs (default tier) and the NVML path (gpu tier).
The check against vLLM 0.13.0's own classes is tests/memory/test_vllm_source.py."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from workbench.errors import WorkbenchError
from workbench.memory import budget, model_shape, report

ROOT = Path(__file__).resolve().parents[2]

GiB = budget.GiB


@pytest.fixture(scope="module")
def tiny():
    return model_shape.load_model_shape("TinyLlama-1.1B")


def test_shipped_configs_are_the_three_models():
    assert {"tinyllama-1.1b", "qwen2.5-0.5b", "llama-3-8b"} <= {n.lower() for n in model_shape.shipped_configs()}
    assert model_shape.resolve_config_path("tinyllama-1.1b") == model_shape.resolve_config_path("TinyLlama-1.1B")


def test_tinyllama_fp16_kv_is_1kib_per_token_per_layer(tiny):
    cfg = json.loads(model_shape.resolve_config_path("TinyLlama-1.1B").read_text())
    assert tiny.dims.num_layers == cfg["num_hidden_layers"] == 22
    assert (tiny.dims.num_kv_heads, tiny.dims.head_dim) == (4, 64)  # 2048 hidden / 32 heads
    per_layer = budget.kv_bytes_per_token_per_layer(tiny, budget.kv_dtype_bytes("auto", "float16"))
    assert per_layer == 2 * 4 * 64 * 2 == 1024
    plan = budget.plan_memory(tiny, budget.gpu_memory_by_hand(80), dtype="float16", gpu_memory_utilization=0.5)
    assert plan.kv_bytes_per_token == 1024 * 22
    assert plan.page_size_bytes == 16 * 1024


@pytest.mark.parametrize(("name", "published"), [
    # Parameter counts published with the checkpoints (model cards / safetensors index metadata).
    ("TinyLlama-1.1B", 1_100_048_384),
    ("Qwen2.5-0.5B", 494_032_768),  # tied embeddings: lm_head counted once
    ("Llama-3-8B", 8_030_261_248),
])
def test_parameter_count_matches_the_published_checkpoint(name, published):
    assert model_shape.load_model_shape(name).parameters == published


def test_tensor_parallel_splits_kv_heads_and_replicates_when_fewer(tiny):
    qwen = model_shape.load_model_shape("Qwen2.5-0.5B")  # 2 KV heads
    assert budget.kv_bytes_per_token_per_layer(qwen, 2, tp=2) == 2 * 1 * 64 * 2
    # 2 KV heads on 4 GPUs: vLLM replicates, each GPU still holds one head.
    assert budget.kv_bytes_per_token_per_layer(qwen, 2, tp=4) == 2 * 1 * 64 * 2
    # Weights shrink roughly by tp (norms replicated).
    w1, w2 = model_shape.weight_elements(tiny, 1), model_shape.weight_elements(tiny, 2)
    assert w1 / 2 < w2 < w1 / 2 * 1.001


def test_fp8_kv_cache_halves_the_pool_cost(tiny):
    gpu = budget.gpu_memory_by_hand(80)
    bf16 = budget.plan_memory(tiny, gpu, gpu_memory_utilization=0.5)
    fp8 = budget.plan_memory(tiny, gpu, gpu_memory_utilization=0.5, kv_cache_dtype="fp8")
    assert fp8.kv_bytes_per_token_per_layer * 2 == bf16.kv_bytes_per_token_per_layer
    assert fp8.num_blocks in (2 * bf16.num_blocks, 2 * bf16.num_blocks + 1)


def test_float32_checkpoint_runs_in_bf16_on_ampere_and_fp16_before(tmp_path):
    cfg = json.loads(model_shape.resolve_config_path("TinyLlama-1.1B").read_text())
    cfg["torch_dtype"] = "float32"
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    shape = model_shape.load_model_shape(str(tmp_path))
    assert budget.resolve_model_dtype(shape, "auto", (9, 0)) == "bfloat16"
    assert budget.resolve_model_dtype(shape, "auto", (7, 5)) == "float16"


def test_plan_follows_vllm_budget_arithmetic():
    llama = model_shape.load_model_shape("Llama-3-8B")
    gpu = budget.gpu_memory_by_hand(80, used_gib=10, name="NVIDIA H100 80GB HBM3")
    plan = budget.plan_memory(llama, gpu, max_model_len=8192, max_num_seqs=32)
    assert plan.requested_bytes == int(gpu.total_bytes * plan.gpu_memory_utilization)
    non_kv = plan.weights_bytes + plan.activation_bytes + plan.non_torch_bytes
    assert plan.kv_pool_bytes == plan.requested_bytes - non_kv
    assert plan.num_blocks == plan.kv_pool_bytes // plan.page_size_bytes // llama.dims.num_layers
    assert plan.kv_tokens == plan.num_blocks * 16
    assert plan.max_concurrency == pytest.approx(plan.num_blocks / (8192 // 16))
    # The recommendation coexists: it starts (free >= total x util) and leaves non-negative headroom.
    assert plan.startup_ok and plan.headroom_bytes >= 0
    assert plan.min_utilization <= plan.recommended_utilization <= plan.max_utilization
    # 32 sequences of 8192 tokens fit at the recommendation, which asks only for what they need.
    assert 32 <= plan.max_concurrency < 33
    assert plan.recommended_utilization < plan.max_utilization
    # H100 (>= 70 GiB, not A100): the LLM class defaults of vLLM 0.13.0.
    assert plan.max_num_batched_tokens == 16384


def test_other_processes_cap_the_recommendation():
    llama = model_shape.load_model_shape("Llama-3-8B")
    alone = budget.plan_memory(llama, budget.gpu_memory_by_hand(80), max_model_len=8192)
    shared = budget.plan_memory(llama, budget.gpu_memory_by_hand(80, used_gib=40), max_model_len=8192)
    assert shared.recommended_utilization < alone.recommended_utilization
    assert shared.recommended_utilization * 80 * GiB + shared.outside_budget_bytes <= 40 * GiB
    # Asking for 0.9 while 40 GiB are taken is what vLLM refuses at start-up.
    refused = budget.plan_memory(llama, budget.gpu_memory_by_hand(80, used_gib=40), gpu_memory_utilization=0.9)
    assert not refused.startup_ok
    assert any("refuses to start" in line for line in report.explain(refused))


def test_model_that_cannot_fit_says_so():
    llama = model_shape.load_model_shape("Llama-3-8B")
    plan = budget.plan_memory(llama, budget.gpu_memory_by_hand(24, used_gib=8), max_model_len=8192)
    assert plan.min_utilization > plan.max_utilization
    assert any(line.startswith("11. Does NOT fit") for line in report.explain(plan))


def test_explanation_is_numbered_lines_ending_in_the_recommendation(tiny):
    lines = report.explain(budget.plan_memory(tiny, budget.gpu_memory_by_hand(80, used_gib=20)))
    assert [int(line.split(".")[0]) for line in lines] == list(range(1, 12))
    assert "2 (K,V) x 4 KV heads x 64 head_dim x 2 bytes" in lines[2] and "= 1,024 bytes" in lines[2]
    assert lines[-1].startswith("11. Recommended gpu_memory_utilization=")


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"kv_cache_dtype": "fp4"}, "--kv-cache-dtype"),
    ({"tp": 3}, "--tp 3"),
    ({"gpu_memory_utilization": 1.5}, "--gpu-util"),
    ({"dtype": "int3"}, "--dtype"),
    ({"block_size": 24}, "--block-size"),
])
def test_bad_input_is_one_line_with_the_fix(tiny, kwargs, message):
    with pytest.raises(WorkbenchError, match=message):
        budget.plan_memory(tiny, budget.gpu_memory_by_hand(80), **kwargs)


def test_unknown_model_lists_the_shipped_configs():
    with pytest.raises(WorkbenchError, match=r"(?i)tinyllama-1\.1b"):
        model_shape.load_model_shape("Mistral-404B")


def _invoke(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "invoke", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=60)


def test_task_prints_the_explanation_and_json():
    out = _invoke("plan-memory", "--model", "TinyLlama-1.1B", "--total-gib", "80", "--used-gib", "20")
    assert out.returncode == 0, out.stderr
    assert "2 (K,V) x 4 KV heads x 64 head_dim x 2 bytes" in out.stdout
    assert "--gpu-memory-utilization" in out.stdout
    js = _invoke("plan-memory", "--model", str(model_shape.resolve_config_path("Qwen2.5-0.5B")),
                 "--total-gib", "80", "--max-model-len", "4096", "--json")
    assert js.returncode == 0, js.stderr
    data = json.loads(js.stdout)
    assert data["max_model_len"] == 4096 and data["kv_bytes_per_token_per_layer"] == 2 * 2 * 64 * 2


def test_task_bad_model_exits_with_one_line():
    out = _invoke("plan-memory", "--model", "nope", "--total-gib", "80")
    assert out.returncode == 1
    assert out.stderr.strip().startswith("error: --model 'nope'") and "Traceback" not in out.stderr


@pytest.mark.gpu
def test_nvml_path_reads_the_real_gpu():
    """On the GPU host: NVML's total matches CUDA's, in-use memory is seen, and the plan starts there."""
    import torch

    from workbench.gpus import query_gpus

    gpu = budget.gpu_memory_from_nvml(0)
    nvml = query_gpus()[0]
    assert gpu.total_bytes == nvml.memory_total_bytes and gpu.compute_capability == nvml.compute_capability
    _, total_cuda = torch.cuda.mem_get_info(0)
    # NVML's total includes memory CUDA never hands out: measured on an H200, NVML 150,754,820,096 B vs
    # CUDA 150,109,880,320 B (0.43% lower). vLLM budgets against CUDA's figure; the plan says so.
    assert 0 <= gpu.total_bytes - total_cuda < 0.01 * gpu.total_bytes
    # Holding 4 GiB in this process shows up as in-use memory, and lowers the recommendation.
    before = budget.plan_memory(model_shape.load_model_shape("Llama-3-8B"), gpu, max_model_len=8192)
    block = torch.empty(4 * GiB, dtype=torch.uint8, device="cuda:0")
    after_gpu = budget.gpu_memory_from_nvml(0)
    assert after_gpu.used_bytes - gpu.used_bytes >= 4 * GiB - 64 * budget.MiB
    after = budget.plan_memory(model_shape.load_model_shape("Llama-3-8B"), after_gpu, max_model_len=8192)
    # The cap falls by the held share of the card (2.9% on an H200, 5% on an H100), less 0.01 of rounding.
    assert after.max_utilization <= before.max_utilization - (4 * GiB / gpu.total_bytes - 0.011)
    del block
    assert after.startup_ok
