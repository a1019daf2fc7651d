"""Model configs (HF config.json, no weights) -> the GEMM shapes vLLM runs for them.

vLLM fuses q/k/v into one column-parallel ``qkv_proj`` and gate/up into ``gate_up_proj``; with
tensor parallelism the column-parallel outputs and the row-parallel inputs are split TP ways (KV
heads are replicated when TP exceeds their count), and the vocabulary is padded to a multiple of 64.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

CONFIG_DIR = Path(__file__).with_name("configs")
VOCAB_PADDING = 64  # vLLM's DEFAULT_VOCAB_PADDING_SIZE


@dataclass(frozen=True)
class LinearShape:
    """One GEMM: y[M, n] = x[M, k] @ w[n, k].T (+ bias when ``bias``)."""

    model: str
    layer: str
    n: int
    k: int
    bias: bool = False


def available_models() -> list[str]:
    """Names of the shipped configs (custom_kernels/custom_kernels/configs/<name>/config.json)."""
    return sorted(p.parent.name for p in CONFIG_DIR.glob("*/config.json"))


def resolve_config(model: str | Path) -> Path:
    """A config.json, a folder holding one, or a shipped name -> the config.json path.

    Shipped names match case-insensitively and by their last path component, so an HF id such as
    "Qwen/Qwen2.5-0.5B" finds the shipped "qwen2.5-0.5b" (the one rule the workbench uses too)."""
    path = Path(model).expanduser()
    candidates = [path, path / "config.json"]
    for name in dict.fromkeys((str(model), str(model).lower(), str(model).rstrip("/").split("/")[-1].lower())):
        candidates.append(CONFIG_DIR / name / "config.json")
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(
        f"no model config {str(model)!r}: pass a config.json, a folder with one, or one of {available_models()}")


def load_config(model: str | Path) -> tuple[str, dict]:
    """(model name, parsed config.json)."""
    path = resolve_config(model)
    name = path.parent.name if path.name == "config.json" else path.stem
    return name, json.loads(path.read_text())


def linear_shapes(model: str | Path, tp: int = 1, fused: bool = True) -> list[LinearShape]:
    """The distinct linear shapes of one decoder layer plus lm_head, for tensor-parallel size ``tp``."""
    if tp < 1:
        raise ValueError(f"tensor-parallel size must be >= 1, got {tp}")
    name, cfg = load_config(model)
    hidden = cfg["hidden_size"]
    heads = cfg["num_attention_heads"]
    kv_heads = cfg.get("num_key_value_heads", heads)
    head_dim = cfg.get("head_dim") or hidden // heads
    inter = cfg["intermediate_size"]
    vocab = cfg["vocab_size"]
    if heads % tp or inter % tp:
        raise ValueError(f"{name}: {heads} heads / intermediate {inter} don't split {tp} ways; pick a divisor")
    kv_per_rank = max(1, kv_heads // tp)
    qkv_bias = bool(cfg.get("attention_bias", cfg.get("model_type") == "qwen2"))
    q, kv = heads // tp * head_dim, kv_per_rank * head_dim
    shapes = []
    if fused:
        shapes.append(LinearShape(name, "qkv_proj", q + 2 * kv, hidden, qkv_bias))
    else:
        shapes += [LinearShape(name, "q_proj", q, hidden, qkv_bias), LinearShape(name, "k_proj", kv, hidden, qkv_bias),
                   LinearShape(name, "v_proj", kv, hidden, qkv_bias)]
    shapes.append(LinearShape(name, "o_proj", hidden, q))
    if fused:
        shapes.append(LinearShape(name, "gate_up_proj", 2 * inter // tp, hidden))
    else:
        shapes += [LinearShape(name, "gate_proj", inter // tp, hidden),
                   LinearShape(name, "up_proj", inter // tp, hidden)]
    shapes.append(LinearShape(name, "down_proj", hidden, inter // tp))
    padded_vocab = -(-vocab // VOCAB_PADDING) * VOCAB_PADDING
    shapes.append(LinearShape(name, "lm_head", -(-padded_vocab // tp), hidden))
    return shapes
