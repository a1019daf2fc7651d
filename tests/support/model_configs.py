"""Small config.json files that exercise the shape rules (custom_kernels/src/custom_kernels/models.py) where model
types differ: each with whether transformers builds the same linears as vLLM."""

from __future__ import annotations

import json
from pathlib import Path

BASE = {"hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 1, "num_attention_heads": 4,
        "num_key_value_heads": 2, "vocab_size": 100, "max_position_embeddings": 128, "tie_word_embeddings": False}
# The tiny Qwen2 the bench sessions run through the stand-in engine (vocabulary 300: the generated tokenizer's
# ids 298/299 are its bos/eos).
TINY_QWEN2 = {"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "hidden_size": 64, "intermediate_size": 128,
              "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 300,
              "max_position_embeddings": 256, "rms_norm_eps": 1e-6, "initializer_range": 0.02,
              "tie_word_embeddings": True, "eos_token_id": 299, "bos_token_id": 298, "torch_dtype": "float32"}
# name -> (config.json, whether transformers' model has vLLM's linears)
SHAPE_CONFIGS = {
    # The config two rules once disagreed on: qwen2.py builds q/k/v with bias=True and never reads the flag.
    "qwen2-attention-bias-false": ({**BASE, "model_type": "qwen2", "attention_bias": False}, True),
    "llama-attention-and-mlp-bias": ({**BASE, "model_type": "llama", "attention_bias": True, "mlp_bias": True}, True),
    "llama-plain": ({**BASE, "model_type": "llama", "num_key_value_heads": 1}, True),
    # internlm3's qkv_bias overrides attention_bias for q/k/v only (llama.py); transformers' Llama ignores it.
    "llama-qkv-bias-only": ({**BASE, "model_type": "llama", "qkv_bias": True}, False),
}


def write_shape_configs(root: Path) -> dict[str, Path]:
    """Each config as root/<name>/config.json; name -> path."""
    paths = {}
    for name, (config, _) in SHAPE_CONFIGS.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        paths[name] = root / name / "config.json"
        paths[name].write_text(json.dumps(config))
    return paths


def transformers_model(name: str):
    """transformers' own causal LM for a config, on the meta device (shapes only)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    values = dict(SHAPE_CONFIGS[name][0])
    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(AutoConfig.for_model(values.pop("model_type"), **values))
