"""plan-memory against vLLM itself: the real 0.13.0 sdist's KV cache spec classes and kv_cache_utils
(imported on CPU in a subprocess, by the probe below) size the same inputs and must agree with
workbench.planning.plan; then, for the 0.13.0 and 0.33.0 sources, vLLM's own sizing code as plan-memory runs it
(workbench/memory/vllm_sizing.py) must agree with the workbench's model of each release (workbench/memory/kv_sizing.py)
on models the project does not ship.

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
from pathlib import Path

import pytest

from tests.support.vllm_source import NEWEST, PINNED, make_fork_repo, release_deps, vllm_source_tree
from workbench.memory import budget, model_shape
from workbench.memory import plan as planning

ROOT = Path(__file__).resolve().parents[2]

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
        shape = model_shape.load_model_shape(name)
        plan = budget.plan_memory(shape, budget.gpu_memory_by_hand(total, used), dtype=dtype, kv_cache_dtype=kv,
                                  tp=tp, block_size=bs, max_model_len=mml, gpu_memory_utilization=util)
        plans.append(plan)
        cases.append({"config_dir": str(model_shape.resolve_config_path(name).parent), "model_dtype": dtype,
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
        assert model_shape.load_model_shape(case[0]).parameters == real["hf_parameters"]


def test_cases_cover_fit_and_no_fit(vllm_results):
    assert {real["fits"] for _, _, real in vllm_results} == {True, False}


# --------------------------------------------------------------------------------------- both releases
# config.json of four models the project does not ship, as published with their checkpoints (typed here:
# no hub). Each exercises a default or a layout the shipped three do not: Mistral's sliding window over
# every layer, Phi-3-mini's window shorter than its context, Gemma's tie_word_embeddings left to the
# config class (True), Qwen2.5's sliding_window switched off by use_sliding_window, and Gemma-2's
# alternating sliding / full layers (two KV cache groups).
CONFIGS = {
    "Mistral-7B-v0.1": {
        "architectures": ["MistralForCausalLM"], "bos_token_id": 1, "eos_token_id": 2, "hidden_act": "silu",
        "hidden_size": 4096, "initializer_range": 0.02, "intermediate_size": 14336, "max_position_embeddings": 32768,
        "model_type": "mistral", "num_attention_heads": 32, "num_hidden_layers": 32, "num_key_value_heads": 8,
        "rms_norm_eps": 1e-05, "rope_theta": 10000.0, "sliding_window": 4096, "tie_word_embeddings": False,
        "torch_dtype": "bfloat16", "transformers_version": "4.34.0.dev0", "use_cache": True, "vocab_size": 32000},
    "Phi-3-mini-4k-instruct": {
        "_name_or_path": "Phi-3-mini-4k-instruct", "architectures": ["Phi3ForCausalLM"], "attention_dropout": 0.0,
        "auto_map": {"AutoConfig": "configuration_phi3.Phi3Config",
                     "AutoModelForCausalLM": "modeling_phi3.Phi3ForCausalLM"},
        "bos_token_id": 1, "embd_pdrop": 0.0, "eos_token_id": 32000, "hidden_act": "silu", "hidden_size": 3072,
        "initializer_range": 0.02, "intermediate_size": 8192, "max_position_embeddings": 4096, "model_type": "phi3",
        "num_attention_heads": 32, "num_hidden_layers": 32, "num_key_value_heads": 32,
        "original_max_position_embeddings": 4096, "pad_token_id": 32000, "resid_pdrop": 0.0, "rms_norm_eps": 1e-05,
        "rope_scaling": None, "rope_theta": 10000.0, "sliding_window": 2047, "tie_word_embeddings": False,
        "torch_dtype": "bfloat16", "transformers_version": "4.40.2", "use_cache": True, "attention_bias": False,
        "vocab_size": 32064},
    "gemma-2b": {
        "architectures": ["GemmaForCausalLM"], "attention_bias": False, "attention_dropout": 0.0, "bos_token_id": 2,
        "eos_token_id": 1, "head_dim": 256, "hidden_act": "gelu", "hidden_size": 2048, "initializer_range": 0.02,
        "intermediate_size": 16384, "max_position_embeddings": 8192, "model_type": "gemma", "num_attention_heads": 8,
        "num_hidden_layers": 18, "num_key_value_heads": 1, "pad_token_id": 0, "rms_norm_eps": 1e-06,
        "rope_scaling": None, "rope_theta": 10000.0, "torch_dtype": "bfloat16", "transformers_version": "4.38.0.dev0",
        "use_cache": True, "vocab_size": 256000},
    "Qwen2.5-7B": {
        "architectures": ["Qwen2ForCausalLM"], "attention_dropout": 0.0, "bos_token_id": 151643,
        "eos_token_id": 151643, "hidden_act": "silu", "hidden_size": 3584, "initializer_range": 0.02,
        "intermediate_size": 18944, "max_position_embeddings": 131072, "max_window_layers": 28, "model_type": "qwen2",
        "num_attention_heads": 28, "num_hidden_layers": 28, "num_key_value_heads": 4, "rms_norm_eps": 1e-06,
        "rope_theta": 1000000.0, "sliding_window": 131072, "tie_word_embeddings": False, "torch_dtype": "bfloat16",
        "transformers_version": "4.43.1", "use_cache": True, "use_mrope": False, "use_sliding_window": False,
        "vocab_size": 152064},
    "gemma-2-2b": {
        "architectures": ["Gemma2ForCausalLM"], "attention_bias": False, "attention_dropout": 0.0,
        "attn_logit_softcapping": 50.0, "bos_token_id": 2, "cache_implementation": "hybrid", "eos_token_id": 1,
        "final_logit_softcapping": 30.0, "head_dim": 256, "hidden_act": "gelu_pytorch_tanh",
        "hidden_activation": "gelu_pytorch_tanh", "hidden_size": 2304, "initializer_range": 0.02,
        "intermediate_size": 9216, "max_position_embeddings": 8192, "model_type": "gemma2", "num_attention_heads": 8,
        "num_hidden_layers": 26, "num_key_value_heads": 4, "pad_token_id": 0, "query_pre_attn_scalar": 256,
        "rms_norm_eps": 1e-06, "rope_theta": 10000.0, "sliding_window": 4096, "torch_dtype": "float32",
        "transformers_version": "4.42.4", "use_cache": True, "vocab_size": 256000},
}
# Parameter counts published with the checkpoints (model cards / safetensors metadata).
PUBLISHED = {"Mistral-7B-v0.1": 7_241_732_096, "Phi-3-mini-4k-instruct": 3_821_079_552, "gemma-2b": 2_506_172_416,
             "Qwen2.5-7B": 7_615_616_512}
# (config, max_model_len, total GiB, used GiB, gpu_memory_utilization or None for the recommendation)
RELEASE_CASES = [
    ("Mistral-7B-v0.1", 32768, 80, 0, 0.5),
    ("Mistral-7B-v0.1", 32768, 80, 0, 0.9),
    ("Mistral-7B-v0.1", 32768, 24, 2, None),
    ("Phi-3-mini-4k-instruct", None, 80, 0, 0.5),
    ("Phi-3-mini-4k-instruct", None, 24, 4, None),
    ("gemma-2b", None, 80, 0, 0.5),
    ("gemma-2b", None, 16, 0, 0.9),
    ("Qwen2.5-7B", 32768, 80, 0, 0.9),
    ("Qwen2.5-7B", 131072, 24, 0, 0.9),  # one 128k request does not fit
    ("gemma-2-2b", 8192, 80, 0, 0.5),
    ("gemma-2-2b", 8192, 24, 0, None),
]
KV_FIELDS = ("num_kv_heads_per_gpu", "head_dim", "page_size_bytes", "sliding_layers", "kv_groups",
             "kv_bytes_per_sequence", "num_blocks", "kv_tokens", "fits", "min_utilization",
             "recommended_utilization", "max_utilization", "parameters_per_gpu")
RELEASES = [PINNED, NEWEST]


@pytest.fixture(scope="module")
def config_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("configs")
    for name, config in CONFIGS.items():
        (root / name).mkdir()
        (root / name / "config.json").write_text(json.dumps(config, indent=2))
    return {name: str(root / name) for name in CONFIGS}


def _plan_args(config_dirs, case, release):
    name, max_model_len, total, used, util = case
    gpu = budget.gpu_memory_by_hand(total, used, name="NVIDIA H100 80GB HBM3" if total >= 70 else "GPU")
    return config_dirs[name], gpu, {"max_model_len": max_model_len, "gpu_memory_utilization": util,
                                    "vllm_version": release}


@pytest.fixture(scope="module", params=RELEASES)
def release_plans(request, config_dirs):
    """(release, [(case, the workbench's model, vLLM's own code)]) for every case, vLLM imported once."""
    release = request.param
    deps = release_deps(release)
    requests, builtin = [], []
    for case in RELEASE_CASES:
        path, gpu, knobs = _plan_args(config_dirs, case, release)
        requests.append(planning.plan_request(path, gpu, **knobs))
        builtin.append(budget.plan_memory(model_shape.load_model_shape(path), gpu, **knobs))
    saved = os.environ.get("PYTHONPATH")
    if deps is not None:
        os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(deps), saved]))
    try:
        own = planning.plans_with_vllm(vllm_source_tree(release), requests)
    finally:
        if saved is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = saved
    return release, list(zip(RELEASE_CASES, builtin, own, strict=True))


def test_the_workbench_sizes_as_each_release_does(release_plans):
    """The workbench's model of each release equals that release's own sizing code, case by case."""
    release, results = release_plans
    for case, ours, theirs in results:
        assert theirs.sizing.startswith(f"vLLM {release}'s own code"), theirs.sizing
        assert ours.sizing.startswith("the workbench's model"), ours.sizing
        differ = {f: (getattr(ours, f), getattr(theirs, f)) for f in KV_FIELDS
                  if getattr(ours, f) != getattr(theirs, f)}
        assert not differ, f"{release} {case}: {differ}"
        assert ours.max_concurrency == pytest.approx(theirs.max_concurrency), case
    assert {theirs.fits for _, _, theirs in results} == {True, False}


def test_release_numbers_from_vllms_own_code(release_plans):
    """What vLLM itself says for the models the old planner got wrong (numbers from its own code, above)."""
    release, results = release_plans
    plans = {(c[0], c[4], c[2]): theirs for c, _, theirs in results}
    mistral_half, mistral_most = plans["Mistral-7B-v0.1", 0.5, 80], plans["Mistral-7B-v0.1", 0.9, 80]
    assert mistral_half.sliding_layers == 32 and mistral_half.sliding_window == 4096
    gib = budget.GiB
    if release == PINNED:
        # A 32k request holds its 4096-token window plus one step's 16384 tokens (+1 block): 2.50 GiB, not 4.
        assert mistral_half.kv_bytes_per_sequence == 1281 * 16 * 131072 < 2.51 * gib
        assert round(mistral_half.max_concurrency, 2) == 9.87 and round(mistral_most.max_concurrency, 2) == 22.66
    else:
        # 0.33.0 keeps two scheduled batches in flight (async scheduling): the window plus 2 x 16384 tokens
        # covers the whole 32k request.
        assert mistral_half.kv_bytes_per_sequence == (2048 + 1) * 16 * 131072
        assert round(mistral_half.max_concurrency, 2) == 6.17 and round(mistral_most.max_concurrency, 2) == 14.17
    # Gemma-2B: tied embeddings (the config class's default), so 524,288,000 parameters fewer than untied.
    gemma = plans["gemma-2b", 0.5, 80]
    assert gemma.parameters_per_gpu == 2_506_172_416 + (-(-256000 // 64) * 64 - 256000) * 2048
    assert gemma.num_blocks == 107_946
    qwen_long = plans["Qwen2.5-7B", 0.9, 24]
    assert not qwen_long.fits and qwen_long.sliding_layers == 0  # use_sliding_window false: full attention
    assert plans["gemma-2-2b", 0.5, 80].kv_groups == 2


@pytest.mark.parametrize("name", list(PUBLISHED))
def test_configs_read_with_transformers_defaults(config_dirs, name):
    shape = model_shape.load_model_shape(config_dirs[name])
    assert shape.parameters == PUBLISHED[name]
    assert shape.dims.tie_word_embeddings is (name == "gemma-2b")  # not in gemma-2b's file: GemmaConfig's default
    assert shape.sliding_window == {"Mistral-7B-v0.1": 4096, "Phi-3-mini-4k-instruct": 2047}.get(name)


def test_plan_memory_task_says_whose_sizing(config_dirs, tmp_path):
    """The task on a fork at 0.13.0 (the real source, tagged): vLLM's own code sizes it, and it says so;
    --sizing builtin says the workbench's model."""
    fork = make_fork_repo(PINNED, tmp_path / "fork")
    env = {**os.environ, "INVOKE_WORKBENCH_FORK": str(fork)}
    args = [sys.executable, "-m", "invoke", "-r", str(ROOT), "plan-memory", "--model", config_dirs["Mistral-7B-v0.1"],
            "--total-gib", "80", "--max-model-len", "32768", "--gpu-util", "0.5"]
    own = subprocess.run(args, capture_output=True, text=True, env=env, timeout=600)
    assert own.returncode == 0, own.stderr
    assert f"on vLLM {PINNED}, sized by vLLM {PINNED}'s own code ({fork})" in own.stdout
    assert "release: the fork's release, git tag v0.13.0" in own.stdout and "9.87x" in own.stdout
    model = subprocess.run([*args, "--sizing", "builtin", "--vllm-version", NEWEST], capture_output=True, text=True,
                           env=env, timeout=600)
    assert model.returncode == 0, model.stderr
    assert f"sized by the workbench's model of vLLM {NEWEST}'s sizing" in model.stdout and "6.17x" in model.stdout
