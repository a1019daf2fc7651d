"""plan-memory against vLLM 0.13.0 itself: the real sdist's KV cache spec classes and kv_cache_utils
(imported on CPU in a subprocess) size the same inputs, and must agree with workbench.memory.

What runs from vLLM: ModelConfig.get_total_num_kv_heads / get_num_kv_heads / get_head_size on the
transformers config built from our config.json, FullAttentionSpec.page_size_bytes and
max_memory_usage_bytes, kv_cache_utils.get_kv_cache_configs (grouping + get_num_blocks),
get_max_concurrency_for_kv_cache_config and check_enough_kv_cache_memory. The vllm_config passed
to them carries only the fields they read (a full VllmConfig inspects the model in a subprocess that
needs a GPU platform).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.support.vllm_source import vllm_source_tree
from workbench import memory

pytestmark = pytest.mark.vllm_source

PROBE = r"""
import json, sys, types
from types import SimpleNamespace as NS

import torch
from transformers import AutoConfig, AutoModelForCausalLM

from vllm.config.model import ModelConfig
from vllm.utils.torch_utils import STR_DTYPE_TO_TORCH_DTYPE, get_dtype_size
from vllm.v1.core import kv_cache_utils as kcu
from vllm.v1.kv_cache_interface import FullAttentionSpec

out = []
for case in json.loads(sys.argv[1]):
    hf = AutoConfig.from_pretrained(case["config_dir"])
    mc = NS(hf_config=hf, hf_text_config=hf, use_mla=False, is_deepseek_mla=False, is_attention_free=False,
            max_model_len=case["max_model_len"])
    for name in ("get_total_num_kv_heads", "get_num_kv_heads", "get_head_size"):
        setattr(mc, name, types.MethodType(getattr(ModelConfig, name), mc))
    pc = NS(tensor_parallel_size=case["tp"], decode_context_parallel_size=1, prefill_context_parallel_size=1)
    vc = NS(model_config=mc, parallel_config=pc, cache_config=NS(num_gpu_blocks_override=None),
            scheduler_config=NS(disable_hybrid_kv_cache_manager=False))
    kv = case["kv_cache_dtype"]
    dtype = STR_DTYPE_TO_TORCH_DTYPE[case["model_dtype"] if kv == "auto" else kv]
    spec = FullAttentionSpec(block_size=case["block_size"], num_kv_heads=mc.get_num_kv_heads(pc),
                             head_size=mc.get_head_size(), dtype=dtype)
    specs = {f"model.layers.{i}.self_attn.attn": spec for i in range(hf.num_hidden_layers)}
    # Before the check: on failure, its estimate_max_model_len leaves a probed max_model_len behind.
    per_seq = spec.max_memory_usage_bytes(vc) * len(specs)
    try:
        kcu.check_enough_kv_cache_memory(vc, specs, case["available"])
        fits = True
    except ValueError:
        fits = False
    row = dict(num_kv_heads=mc.get_num_kv_heads(pc), head_size=mc.get_head_size(), dtype_size=get_dtype_size(dtype),
               page_size_bytes=spec.page_size_bytes, per_seq=per_seq, fits=fits)
    if fits:
        (cfg,) = kcu.get_kv_cache_configs(vc, [specs], [case["available"]])
        row.update(num_blocks=cfg.num_blocks,
                   max_concurrency=kcu.get_max_concurrency_for_kv_cache_config(vc, cfg),
                   tensor_bytes=sum(t.size for t in cfg.kv_cache_tensors))
    # Parameter count of the real transformers model built on the meta device from the same config.
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(hf)
    row["hf_parameters"] = sum(p.numel() for p in model.parameters())
    out.append(row)
print("RESULT " + json.dumps(out))
"""

CASES = [
    # (config, model dtype, kv cache dtype, tp, block size, max_model_len, total GiB, used GiB, util)
    ("TinyLlama-1.1B", "float16", "auto", 1, 16, 2048, 80, 0, 0.5),
    ("TinyLlama-1.1B", "bfloat16", "fp8", 2, 32, 2048, 24, 3, None),
    ("Qwen2.5-0.5B", "bfloat16", "auto", 1, 16, 32768, 80, 20, None),
    ("Qwen2.5-0.5B", "bfloat16", "auto", 2, 16, 32768, 80, 0, 0.3),
    ("TinyLlama-1.1B", "bfloat16", "auto", 8, 16, 2048, 80, 0, 0.2),  # 4 KV heads on 8 GPUs: replicated
    ("Llama-3-8B", "bfloat16", "auto", 1, 16, 8192, 80, 10, None),
    ("Llama-3-8B", "bfloat16", "fp8_e4m3", 2, 64, 8192, 141, 0, 0.9),
    ("Llama-3-8B", "bfloat16", "auto", 1, 16, 8192, 24, 0, 0.7),  # pool smaller than one request
]


@pytest.fixture(scope="module")
def vllm_results():
    tree = vllm_source_tree("0.13.0")
    plans, cases = [], []
    for name, dtype, kv, tp, bs, mml, total, used, util in CASES:
        shape = memory.load_model_shape(name)
        plan = memory.plan_memory(shape, memory.gpu_memory_by_hand(total, used), dtype=dtype, kv_cache_dtype=kv,
                                  tp=tp, block_size=bs, max_model_len=mml, gpu_memory_utilization=util)
        plans.append(plan)
        cases.append({"config_dir": str(memory.resolve_config_path(name).parent), "model_dtype": dtype,
                      "kv_cache_dtype": kv, "tp": tp, "block_size": bs, "max_model_len": mml,
                      "available": plan.kv_pool_bytes})
    env = {**os.environ, "PYTHONPATH": str(tree), "HF_HUB_OFFLINE": "1", "VLLM_LOGGING_LEVEL": "ERROR"}
    proc = subprocess.run([sys.executable, "-c", PROBE, json.dumps(cases)], capture_output=True, text=True,
                          env=env, timeout=300, cwd=tree)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, f"vLLM probe failed:\n{proc.stderr[-3000:]}"
    return list(zip(CASES, plans, json.loads(lines[-1][len("RESULT "):]), strict=True))


@pytest.mark.parametrize("index", range(len(CASES)), ids=[f"{c[0]}-{c[2]}-tp{c[3]}" for c in CASES])
def test_plan_matches_vllm_kv_cache_sizing(vllm_results, index):
    case, plan, real = vllm_results[index]
    assert plan.num_kv_heads_per_gpu == real["num_kv_heads"]
    assert plan.head_dim == real["head_size"]
    assert plan.kv_dtype_bytes == real["dtype_size"]
    assert plan.page_size_bytes == real["page_size_bytes"]
    assert plan.kv_bytes_per_sequence == real["per_seq"]
    assert plan.fits == real["fits"]
    if real["fits"]:
        assert plan.num_blocks == real["num_blocks"]
        assert plan.max_concurrency == pytest.approx(real["max_concurrency"])
        assert plan.num_blocks * plan.page_size_bytes * plan.num_layers == real["tensor_bytes"]
    if case[3] == 1:  # tp=1: the whole model's parameters, as transformers builds it
        assert memory.load_model_shape(case[0]).parameters == real["hf_parameters"]


def test_cases_cover_fit_and_no_fit(vllm_results):
    assert {real["fits"] for _, _, real in vllm_results} == {True, False}
