"""The shape rules' one home (custom_kernels/src/custom_kernels/models.py): a config -> the GEMMs vLLM builds.
Checked against vLLM's own decoder layers from the 0.13.0 and 0.33.0 sources (vllm_source tier; the shipped
configs also at TP=2/4/8, one rank's layers) and, on every run, against transformers' models. plan-memory's
reading of the same files: tests/memory/test_model_shape.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from custom_kernels.models import available_models, linear_shapes, load_config, model_dims, padded_vocab
from tests.support.model_configs import SHAPE_CONFIGS, transformers_model, write_shape_configs
from tests.support.vllm_source import NEWEST, PINNED, release_deps, vllm_source_tree

ROOT = Path(__file__).resolve().parents[1]
PROBE = ROOT / "tests" / "support" / "decoder_probe.py"
PARENT = {"qkv_proj": "self_attn.", "o_proj": "self_attn.", "gate_up_proj": "mlp.", "down_proj": "mlp.", "lm_head": ""}


@pytest.fixture(scope="module")
def config_files(tmp_path_factory) -> dict[str, Path]:
    return write_shape_configs(tmp_path_factory.mktemp("shape-configs"))


def test_qwen2_builds_qkv_bias_whatever_attention_bias_says(config_files):
    shapes = {s.layer: s for s in linear_shapes(config_files["qwen2-attention-bias-false"])}
    assert shapes["qkv_proj"].bias
    assert not (shapes["o_proj"].bias or shapes["gate_up_proj"].bias or shapes["down_proj"].bias)


@pytest.mark.parametrize("name", [n for n, (_, same) in SHAPE_CONFIGS.items() if same])
def test_linears_match_the_transformers_model(config_files, name):
    """transformers' own model has the unfused linears (shape and bias) the rules give."""
    model = transformers_model(name)
    linears = {n.rsplit(".", 1)[-1]: (m.out_features, m.in_features, m.bias is not None)
               for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
    want = {s.layer: (s.n, s.k, s.bias) for s in linear_shapes(config_files[name], fused=False)}
    want["lm_head"] = (SHAPE_CONFIGS[name][0]["vocab_size"], *want["lm_head"][1:])  # transformers does not pad
    assert linears == want


def _probe(release: str, items: list) -> list[dict]:
    """Every parameter's shape of vLLM's own decoder layer and lm_head, built from the release's source per item."""
    deps = release_deps(release)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(str(p) for p in (deps,) if p),
           "VLLM_LOGGING_LEVEL": "ERROR", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, str(PROBE), str(vllm_source_tree(release))], input=json.dumps(items),
                          capture_output=True, text=True, env=env, timeout=600)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, proc.stderr[-3000:]
    return json.loads(lines[-1][len("RESULT "):])


def _wanted(config: Path | str, tp: int = 1) -> dict[str, list[int]]:
    want = {}
    for s in linear_shapes(config, tp=tp):
        module = f"{PARENT[s.layer]}{s.layer}"
        want[f"{module}.weight"] = [s.n, s.k]
        if s.bias:
            want[f"{module}.bias"] = [s.n]
    return want


# Every shipped config at every TP size up to 8 that vLLM accepts for it (Qwen2.5-0.5B's 14 heads: 1 and 2).
TP_CASES = [(name, tp) for name in available_models() for tp in (1, 2, 4, 8)
            if model_dims(load_config(name)[1], name).tp_problem(tp) is None]


@pytest.mark.vllm_source
@pytest.mark.parametrize("release", [PINNED, NEWEST])
def test_tp_rank_shapes_of_the_shipped_configs_are_the_ones_vllm_builds(release):
    """One rank's qkv/o/gate_up/down/lm_head as vLLM's own layers size them at TP=1/2/4/8 (their partition
    arithmetic: heads and KV heads per rank or replicated, intermediate and padded vocabulary split) equal the
    rank shapes tune and the dispatch table use."""
    built = _probe(release, [{"config": load_config(name)[1], "tp": tp} for name, tp in TP_CASES])
    for (name, tp), shapes in zip(TP_CASES, built, strict=True):
        got = {k: v for k, v in shapes.items() if "proj" in k or k.startswith("lm_head")}
        assert got == _wanted(name, tp), f"{release} {name} TP={tp}"


@pytest.mark.vllm_source
@pytest.mark.parametrize("release", [PINNED, NEWEST])
def test_shapes_are_the_ones_vllm_builds(release, config_files):
    """vLLM's own decoder layer and lm_head, built from the release's source for each config, hold exactly
    the fused GEMMs and biases the rules give (and the vocabulary padded to 64)."""
    built = _probe(release, [config for config, _ in SHAPE_CONFIGS.values()])
    for name, shapes in zip(SHAPE_CONFIGS, built, strict=True):
        got = {k: v for k, v in shapes.items() if "proj" in k or k.startswith("lm_head")}
        assert got == _wanted(config_files[name]), f"{release} {name}"
        assert shapes["lm_head.weight"][0] == padded_vocab(SHAPE_CONFIGS[name][0]["vocab_size"]) == 128
