"""What plan-memory knows of a model: its dimensions as vLLM builds it (the kernels package's shape rules,
custom_kernels/src/custom_kernels/models.py, reached through workbench.models) read off the transformers config
class, plus what only the planner needs (dtype, context length, sliding windows), and the weights' size."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from workbench import models
from workbench.errors import WorkbenchError

ROOT = Path(__file__).resolve().parents[2]  # the checkout: its kernels package ships the model configs


@dataclass(frozen=True)
class ModelShape:
    """A decoder-only model for memory planning, with transformers' defaults for what its config.json leaves
    out (e.g. Gemma's tie_word_embeddings=True)."""

    dims: Any  # custom_kernels.models.ModelDims: layers, heads, head_dim, biases, vocabulary, tied embeddings
    config_dtype: str
    max_position_embeddings: int
    sliding_window: int | None = None
    layer_types: tuple[str, ...] | None = None
    config_path: str = ""

    @property
    def name(self) -> str:
        return self.dims.name

    @property
    def parameters(self) -> int:
        """Parameter count of the whole model (embeddings, attention, MLP, norms, lm_head unless tied)."""
        return weight_elements(self, tp=1, pad_vocab=False)


def shipped_configs() -> list[str]:
    """Names of the model configs shipped with the workbench (workbench.models, the one resolver)."""
    return models.shipped(ROOT)


def resolve_config_path(model: str) -> Path:
    """A shipped config name (e.g. TinyLlama-1.1B, any case), a config.json, or a folder holding one."""
    found = models.find_config(ROOT, model)
    if found is None:
        names = ", ".join(shipped_configs()) or "none"
        raise WorkbenchError(f"--model {model!r} is neither a shipped config nor a config.json: give one of {names}, "
                             "or the path of a Hugging Face config.json")
    return found


def read_hf_config(path: Path):
    """The transformers config object of a config.json: the model type's own class, so every value the
    file leaves out takes that class's default (as transformers and vLLM see the model)."""
    import logging
    import warnings

    try:
        raw = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise WorkbenchError(f"cannot read {path}: {err}; pass a Hugging Face config.json") from err
    if not isinstance(raw, dict) or not raw.get("model_type"):
        raise WorkbenchError(f"{path} has no model_type: pass a Hugging Face config.json (it names its model_type)")
    try:
        from transformers import AutoConfig
        from transformers.utils import logging as hf_logging
    except ImportError as err:
        raise WorkbenchError(f"transformers is not importable ({err}): pip install -e . (it is a dependency)") from err
    hf_logging.set_verbosity_error()
    logging.getLogger("transformers").setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return raw, AutoConfig.from_pretrained(str(path))
    except (ValueError, KeyError, TypeError, OSError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise WorkbenchError(f"transformers cannot read {path} ({first[:200]}): check its model_type, or upgrade "
                             "transformers (pip install -U transformers) for a newer model") from None


def _window(value) -> int | None:
    """A config's sliding_window as vLLM uses it: a positive token count, or None (absent, 0 or null)."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def _dtype_name(value) -> str:
    return str(value).removeprefix("torch.") if value else ""


def load_model_shape(model: str) -> ModelShape:
    """The shape of a decoder-only model from its config.json, read through transformers' config class."""
    import warnings

    path = resolve_config_path(model)
    _, hf = read_hf_config(path)
    cfg = hf.get_text_config() if hasattr(hf, "get_text_config") else hf
    if getattr(cfg, "kv_lora_rank", None) or getattr(cfg, "num_local_experts", None) or \
            getattr(cfg, "num_experts", None):
        raise WorkbenchError(f"{path}: MLA and MoE models are not covered by plan-memory; use a dense model config")
    try:
        dims = models.model_dims(ROOT, cfg, models.config_name(ROOT, path))
    except ValueError as err:
        raise WorkbenchError(f"{path}: {err}: plan-memory needs a decoder-only LLM config") from None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch_dtype's deprecation in newer transformers
        dtype = _dtype_name(getattr(cfg, "dtype", None)) or _dtype_name(getattr(cfg, "torch_dtype", None))
    layer_types = getattr(cfg, "layer_types", None)
    return ModelShape(
        dims=dims,
        config_dtype=dtype or "float32",
        max_position_embeddings=int(getattr(cfg, "max_position_embeddings", None) or 2048),
        sliding_window=_window(getattr(cfg, "sliding_window", None)),
        layer_types=tuple(layer_types) if layer_types else None,
        config_path=str(path.resolve()),
    )


def weight_elements(shape: ModelShape, tp: int = 1, pad_vocab: bool = True) -> int:
    """Parameters held by one GPU at tensor parallel size ``tp`` (vLLM's column/row/vocab-parallel split);
    with ``pad_vocab`` the embedding rows vLLM allocates (vocab padded to a multiple of 64, then split)."""
    d = shape.dims
    h, i = d.hidden_size, d.intermediate_size // tp
    q, kv = d.num_heads * d.head_dim // tp, d.kv_heads_per_rank(tp) * d.head_dim
    # Row-parallel layers (o_proj, down_proj) hold their whole bias on every rank.
    attn = h * (q + 2 * kv) + q * h + ((q + 2 * kv) if d.qkv_bias else 0) + (h if d.o_proj_bias else 0)
    mlp = 3 * h * i + ((2 * i + h) if d.mlp_bias else 0)  # gate_up (merged column-parallel) + down (row-parallel)
    norms = 2 * h  # input_layernorm + post_attention_layernorm, replicated
    vocab = d.vocab_rows_per_rank(tp) if pad_vocab else d.vocab_size // tp
    lm_head = 0 if d.tie_word_embeddings else vocab * h
    return d.num_layers * (attn + mlp + norms) + h + vocab * h + lm_head
