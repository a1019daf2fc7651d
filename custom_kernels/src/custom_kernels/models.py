"""Model configs (HF config.json, no weights) -> the dimensions and GEMM shapes vLLM builds for them.

The one home of the shape rules: head size, KV heads, the q/k/v, o_proj and MLP biases, vocabulary
padding, tied embeddings and what tensor parallelism splits. The workbench reads them through
workbench/models.py (this file, loaded by path, so it needs no torch) for plan-memory and the benches.

vLLM fuses q/k/v into one column-parallel ``qkv_proj`` and gate/up into ``gate_up_proj``; with
tensor parallelism the column-parallel outputs and the row-parallel inputs are split TP ways (KV
heads are replicated when TP exceeds their count), and the vocabulary is padded to a multiple of 64.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CONFIG_DIR = Path(__file__).with_name("configs")
VOCAB_PADDING = 64  # vllm/model_executor/layers/vocab_parallel_embedding.py DEFAULT_VOCAB_PADDING_SIZE
REQUIRED = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "vocab_size")


@dataclass(frozen=True)
class LinearShape:
    """One GEMM: y[M, n] = x[M, k] @ w[n, k].T (+ bias when ``bias``)."""

    model: str
    layer: str
    n: int
    k: int
    bias: bool = False


@dataclass(frozen=True)
class ModelDims:
    """A dense decoder-only model's dimensions as vLLM builds it from its config (``model_dims``)."""

    name: str
    model_type: str
    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    vocab_size: int
    tie_word_embeddings: bool  # lm_head shares embed_tokens' weight (one copy in memory; its GEMM still runs)
    qkv_bias: bool
    o_proj_bias: bool
    mlp_bias: bool

    def kv_heads_per_rank(self, tp: int = 1) -> int:
        """vllm/config/model.py get_num_kv_heads: split over the ranks, replicated when fewer than tp."""
        return max(1, self.num_kv_heads // tp)

    def vocab_rows_per_rank(self, tp: int = 1) -> int:
        """Rows of embed_tokens / lm_head on one rank: the vocabulary padded to 64, then split
        (VocabParallelEmbedding's num_embeddings_per_partition; ``tp_problem`` refuses a TP that leaves a rest)."""
        return padded_vocab(self.vocab_size) // tp

    def tp_problem(self, tp: int) -> str | None:
        """Why vLLM refuses tensor-parallel size ``tp`` for this model, or None when it builds.

        QKVParallelLinear splits the KV heads evenly or replicates them evenly; the attention heads,
        MergedColumnParallelLinear's intermediate size and VocabParallelEmbedding's padded vocabulary must
        divide (linear.py and vocab_parallel_embedding.py ``divide`` assert)."""
        kv = self.num_kv_heads
        if tp < 1:
            return f"{tp} is below 1"
        if kv % tp if kv >= tp else tp % kv:
            return f"{tp} must divide (or be a multiple of) the {kv} KV heads"
        if self.num_heads % tp:
            return f"{tp} does not divide the {self.num_heads} attention heads"
        if self.intermediate_size % tp:
            return f"{tp} does not divide the intermediate size {self.intermediate_size}"
        if padded_vocab(self.vocab_size) % tp:
            return f"{tp} does not divide the padded vocabulary {padded_vocab(self.vocab_size)}"
        return None

    def tp_choices(self, up_to: int = 16) -> list[int]:
        """The tensor-parallel sizes vLLM accepts for this model, up to ``up_to``."""
        return [t for t in range(1, up_to + 1) if self.tp_problem(t) is None]


def padded_vocab(vocab_size: int) -> int:
    """pad_vocab_size(vocab, DEFAULT_VOCAB_PADDING_SIZE): the embedding rows vLLM allocates."""
    return -(-vocab_size // VOCAB_PADDING) * VOCAB_PADDING


def _get(config: Mapping[str, Any] | Any, key: str) -> Any:
    """A config value from a parsed config.json (a dict: the file's values only) or a transformers config
    object (its class's defaults fill what the file leaves out, as vLLM sees the model)."""
    return config.get(key) if isinstance(config, Mapping) else getattr(config, key, None)


def _has(config: Mapping[str, Any] | Any, key: str) -> bool:
    return key in config if isinstance(config, Mapping) else hasattr(config, key)


def biases(config: Mapping[str, Any] | Any) -> tuple[bool, bool, bool]:
    """(qkv_proj, o_proj, MLP) bias as each model's vLLM code passes ``bias=`` to its linears
    (vllm/model_executor/models/<type>.py, the same in 0.13.0, 0.24.0 and 0.33.0). A config's
    attention_bias does not decide everywhere: qwen2.py builds q/k/v with bias=True whatever it says."""
    model_type = _get(config, "model_type") or ""
    attention_bias = bool(_get(config, "attention_bias"))
    if model_type == "qwen2":
        return True, False, False
    if model_type == "qwen3":
        return attention_bias, False, False
    if model_type == "gemma":
        return False, False, False
    if model_type in ("gemma2", "gemma3", "gemma3_text"):
        return attention_bias, attention_bias, False
    # llama.py, which mistral, phi3 and most dense decoders reuse: attention_bias (or Smaug's "bias") on
    # q/k/v and o_proj, internlm3's qkv_bias overriding q/k/v only, mlp_bias on gate_up and down.
    bias = attention_bias or bool(_get(config, "bias"))
    qkv = bool(_get(config, "qkv_bias")) if _has(config, "qkv_bias") else bias
    return qkv, bias, bool(_get(config, "mlp_bias"))


def num_kv_heads(config: Mapping[str, Any] | Any) -> int:
    """vllm/config/model.py get_total_num_kv_heads (the attention-only path): multi-query means one, else
    the first of Falcon's, LLaMA-2's and ChatGLM's names that is set, else one per attention head."""
    if _get(config, "multi_query") and not _get(config, "new_decoder_architecture"):
        return 1
    for key in ("n_head_kv", "num_kv_heads", "num_key_value_heads", "multi_query_group_num"):
        value = _get(config, key)
        if value is not None:
            return int(value)
    return int(_get(config, "num_attention_heads"))


def head_dim(config: Mapping[str, Any] | Any) -> int:
    """vllm/config/model.py get_head_size: head_dim when set (some configs write null), PLaMo's
    hidden_size_per_head, else hidden_size // num_attention_heads."""
    for key in ("head_dim", "hidden_size_per_head"):
        value = _get(config, key)
        if value is not None:
            return int(value)
    return int(_get(config, "hidden_size")) // int(_get(config, "num_attention_heads"))


def model_dims(config: Mapping[str, Any] | Any, name: str = "") -> ModelDims:
    """The dimensions vLLM builds from a config: a parsed config.json or a transformers config object
    (its text config for a multimodal model). ValueError names what a dense decoder config lacks."""
    missing = [key for key in REQUIRED if _get(config, key) is None]
    if missing:
        raise ValueError(f"the config lacks {', '.join(missing)}")
    qkv, o_proj, mlp = biases(config)
    return ModelDims(
        name=name, model_type=str(_get(config, "model_type") or ""),
        hidden_size=int(_get(config, "hidden_size")), num_layers=int(_get(config, "num_hidden_layers")),
        num_heads=int(_get(config, "num_attention_heads")), num_kv_heads=num_kv_heads(config),
        head_dim=head_dim(config), intermediate_size=int(_get(config, "intermediate_size")),
        vocab_size=int(_get(config, "vocab_size")),
        # vLLM ties lm_head to embed_tokens when the config says so (the class default where it is silent).
        tie_word_embeddings=bool(_get(config, "tie_word_embeddings")),
        qkv_bias=qkv, o_proj_bias=o_proj, mlp_bias=mlp)


def available_models() -> list[str]:
    """Names of the shipped configs (custom_kernels/src/custom_kernels/configs/<name>/config.json)."""
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


def config_name(path: Path) -> str:
    """A model's name from its config's path: the folder of a config.json, else the file's stem."""
    return path.parent.name if path.name == "config.json" else path.stem


def load_config(model: str | Path) -> tuple[str, dict]:
    """(model name, parsed config.json)."""
    path = resolve_config(model)
    return config_name(path), json.loads(path.read_text())


def linear_shapes(model: str | Path | ModelDims, tp: int = 1, fused: bool = True) -> list[LinearShape]:
    """The distinct linear shapes of one decoder layer plus lm_head, for tensor-parallel size ``tp``."""
    if isinstance(model, ModelDims):
        dims = model
    else:
        name, cfg = load_config(model)
        dims = model_dims(cfg, name)
    problem = dims.tp_problem(tp)
    if problem:
        choices = ", ".join(map(str, dims.tp_choices()))
        raise ValueError(f"{dims.name}: tensor-parallel size {problem}; pick one of {choices}")
    name, hidden = dims.name, dims.hidden_size
    q, kv = dims.num_heads // tp * dims.head_dim, dims.kv_heads_per_rank(tp) * dims.head_dim
    inter = dims.intermediate_size // tp
    shapes = []
    if fused:
        shapes.append(LinearShape(name, "qkv_proj", q + 2 * kv, hidden, dims.qkv_bias))
    else:
        shapes += [LinearShape(name, "q_proj", q, hidden, dims.qkv_bias),
                   LinearShape(name, "k_proj", kv, hidden, dims.qkv_bias),
                   LinearShape(name, "v_proj", kv, hidden, dims.qkv_bias)]
    shapes.append(LinearShape(name, "o_proj", hidden, q, dims.o_proj_bias))
    if fused:
        shapes.append(LinearShape(name, "gate_up_proj", 2 * inter, hidden, dims.mlp_bias))
    else:
        shapes += [LinearShape(name, "gate_proj", inter, hidden, dims.mlp_bias),
                   LinearShape(name, "up_proj", inter, hidden, dims.mlp_bias)]
    shapes.append(LinearShape(name, "down_proj", hidden, inter, dims.mlp_bias))
    shapes.append(LinearShape(name, "lm_head", dims.vocab_rows_per_rank(tp), hidden))  # ParallelLMHead: no bias
    return shapes
