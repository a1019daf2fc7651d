"""The shape rules' one home (custom_kernels/custom_kernels/models.py): a config -> the dimensions and GEMMs
vLLM builds. Checked against vLLM's own decoder layers from the 0.13.0 and 0.33.0 sources (vllm_source
tier) and, on every run, against transformers' models and plan-memory's reading of the same files."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from custom_kernels.models import linear_shapes, model_dims, padded_vocab
from tests.support.vllm_source import NEWEST, PINNED, release_deps, vllm_source_tree
from workbench.memory import model_shape

ROOT = Path(__file__).resolve().parents[2]
PROBE = ROOT / "tests" / "support" / "decoder_probe.py"
BASE = {"hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 1, "num_attention_heads": 4,
        "num_key_value_heads": 2, "vocab_size": 100, "max_position_embeddings": 128, "tie_word_embeddings": False}
PARENT = {"qkv_proj": "self_attn.", "o_proj": "self_attn.", "gate_up_proj": "mlp.", "down_proj": "mlp.", "lm_head": ""}
# name -> (config.json, whether transformers builds the same linears as vLLM)
CONFIGS = {
    # The config the two old rules disagreed on: qwen2.py builds q/k/v with bias=True and never reads the flag.
    "qwen2-attention-bias-false": ({**BASE, "model_type": "qwen2", "attention_bias": False}, True),
    "llama-attention-and-mlp-bias": ({**BASE, "model_type": "llama", "attention_bias": True, "mlp_bias": True}, True),
    "llama-plain": ({**BASE, "model_type": "llama", "num_key_value_heads": 1}, True),
    # internlm3's qkv_bias overrides attention_bias for q/k/v only (llama.py); transformers' Llama ignores it.
    "llama-qkv-bias-only": ({**BASE, "model_type": "llama", "qkv_bias": True}, False),
}


@pytest.fixture(scope="module")
def config_files(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("shape-configs")
    paths = {}
    for name, (config, _) in CONFIGS.items():
        (root / name).mkdir()
        paths[name] = root / name / "config.json"
        paths[name].write_text(json.dumps(config))
    return paths


def test_qwen2_builds_qkv_bias_whatever_attention_bias_says(config_files):
    shapes = {s.layer: s for s in linear_shapes(config_files["qwen2-attention-bias-false"])}
    assert shapes["qkv_proj"].bias
    assert not (shapes["o_proj"].bias or shapes["gate_up_proj"].bias or shapes["down_proj"].bias)
    # plan-memory reads the file through transformers' Qwen2Config and the same rule.
    planned = model_shape.load_model_shape(str(config_files["qwen2-attention-bias-false"]))
    assert planned.dims.qkv_bias


@pytest.mark.parametrize("name", CONFIGS)
def test_plan_memory_reads_the_dimensions_the_kernels_package_does(config_files, name):
    """One rule, two inputs: the raw file (the kernels package) and transformers' config object with its
    class defaults (plan-memory) give the same dimensions."""
    path = config_files[name]
    planned = model_shape.load_model_shape(str(path))
    assert dataclasses.asdict(planned.dims) == dataclasses.asdict(model_dims(json.loads(path.read_text()), name))


@pytest.mark.parametrize("name", [n for n, (_, same) in CONFIGS.items() if same])
def test_linears_and_parameters_match_the_transformers_model(config_files, name):
    """transformers' own model (meta device) has the unfused linears the rules give, and plan-memory's
    parameter count."""
    from transformers import AutoConfig, AutoModelForCausalLM

    values = dict(CONFIGS[name][0])
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(AutoConfig.for_model(values.pop("model_type"), **values))
    linears = {n.rsplit(".", 1)[-1]: (m.out_features, m.in_features, m.bias is not None)
               for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and ".layers.1." not in n}
    want = {s.layer: (s.n, s.k, s.bias) for s in linear_shapes(config_files[name], fused=False)}
    want["lm_head"] = (CONFIGS[name][0]["vocab_size"], *want["lm_head"][1:])  # transformers does not pad
    assert linears == want
    assert model_shape.load_model_shape(str(config_files[name])).parameters == sum(p.numel() for p in
                                                                                   model.parameters())


@pytest.mark.vllm_source
@pytest.mark.parametrize("release", [PINNED, NEWEST])
def test_shapes_are_the_ones_vllm_builds(release, config_files):
    """vLLM's own decoder layer and lm_head, built from the release's source for each config, hold exactly
    the fused GEMMs and biases the rules give (and the vocabulary padded to 64)."""
    deps = release_deps(release)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(str(p) for p in (deps,) if p),
           "VLLM_LOGGING_LEVEL": "ERROR", "HF_HUB_OFFLINE": "1"}
    configs = [CONFIGS[name][0] for name in CONFIGS]
    proc = subprocess.run([sys.executable, str(PROBE), str(vllm_source_tree(release))], input=json.dumps(configs),
                          capture_output=True, text=True, env=env, timeout=600)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, proc.stderr[-3000:]
    for name, built in zip(CONFIGS, json.loads(lines[-1][len("RESULT "):]), strict=True):
        want = {}
        for s in linear_shapes(config_files[name]):
            module = f"{PARENT[s.layer]}{s.layer}"
            want[f"{module}.weight"] = [s.n, s.k]
            if s.bias:
                want[f"{module}.bias"] = [s.n]
        got = {k: v for k, v in built.items() if "proj" in k or k.startswith("lm_head")}
        assert got == want, f"{release} {name}"
        assert built["lm_head.weight"][0] == padded_vocab(CONFIGS[name][0]["vocab_size"]) == 128
