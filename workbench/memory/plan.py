"""GPU memory planning for the fork's vLLM release: weights, KV cache, concurrency and a
gpu_memory_utilization that leaves room for the other processes on the GPU.

The budget follows vLLM's own sizing (read from the 0.13.0 and 0.33.0 sources):

- vllm/v1/worker/gpu_worker.py ``Worker.init_device``: after the CUDA context and NCCL exist, vLLM takes
  a snapshot and sets ``requested_memory = total_memory * gpu_memory_utilization``; it refuses to start
  when the free memory then is below that (``ValueError: Free memory on device ...``).
- ``Worker.determine_available_memory`` with vllm/utils/mem_utils.py ``memory_profiling``: KV cache
  memory = requested_memory - (weights + peak activation of a dummy batch of max_num_batched_tokens +
  non-torch increase).
- The KV cache itself (pages, sliding windows, groups, blocks, concurrency, the fit check) is sized by
  workbench/memory/kv_sizing.py, the model of each release, or by vLLM's own code imported from the fork
  (workbench/memory/vllm_sizing.py); tests/memory/test_vllm_source.py checks that both agree on the real sources.
- ``Worker.compile_or_warm_up_model`` captures CUDA graphs *after* the KV cache is allocated: that
  memory comes on top of the requested budget, as do the CUDA context and NCCL buffers.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

from workbench import models
from workbench.errors import WorkbenchError
from workbench.memory import kv_sizing

GiB = 1 << 30
MiB = 1 << 20

# vllm/platforms/cuda.py check_and_update_config: block_size defaults to 16 on CUDA.
DEFAULT_BLOCK_SIZE = 16
# vllm/model_executor/layers/vocab_parallel_embedding.py DEFAULT_VOCAB_PADDING_SIZE.
VOCAB_PADDING = 64
# gpu_worker.py compile_or_warm_up_model: "memory profiling may slightly underestimate ... leave 150MiB".
REDUNDANCY_BYTES = 150 * MiB
# Estimates for what vLLM measures at start-up (each overridable by a flag with the number vLLM logs in
# "Actual usage is X GiB for weight, Y GiB for peak activation, Z GiB for non-torch memory, and W GiB for
# CUDAGraph memory"). The CUDA context (+ NCCL for TP>1) is allocated before vLLM's snapshot, so it is
# outside the requested budget but needs free memory.
CUDA_CONTEXT_BYTES = 512 * MiB
NCCL_BYTES = 256 * MiB
NON_TORCH_BYTES = 256 * MiB  # cuBLAS workspaces, attention-backend buffers grown during profile_run
CUDAGRAPH_BYTES = 512 * MiB  # typical "Graph capturing finished ... took 0.5 GiB" for small/medium models
# Left free for the other processes on the GPU to grow into (their usage is measured once, now).
RESERVE_BYTES = 1 * GiB

# Model dtypes (ModelConfig dtype) and KV cache dtypes (CacheConfig.cache_dtype, 0.13.0 CacheDType).
DTYPE_BYTES = {"float32": 4, "float": 4, "float16": 2, "half": 2, "bfloat16": 2}
KV_CACHE_DTYPES = {"auto": None, "bfloat16": 2, "fp8": 1, "fp8_e4m3": 1, "fp8_e5m2": 1, "fp8_inc": 1}

_ROOT = Path(__file__).resolve().parents[2]  # the checkout: its kernels package ships the model configs


@dataclass(frozen=True)
class ModelShape:
    """What memory planning needs from a Hugging Face config (decoder-only), with transformers' defaults
    for what the file leaves out (e.g. Gemma's tie_word_embeddings=True)."""

    name: str
    model_type: str
    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    vocab_size: int
    tie_word_embeddings: bool
    qkv_bias: bool
    config_dtype: str
    max_position_embeddings: int
    sliding_window: int | None = None
    layer_types: tuple[str, ...] | None = None
    config_path: str = ""

    @property
    def parameters(self) -> int:
        """Parameter count of the whole model (embeddings, attention, MLP, norms, lm_head unless tied)."""
        return weight_elements(self, tp=1, pad_vocab=False)


def shipped_configs() -> list[str]:
    """Names of the model configs shipped with the workbench (workbench.models, the one resolver)."""
    return models.shipped(_ROOT)


def resolve_config_path(model: str) -> Path:
    """A shipped config name (e.g. TinyLlama-1.1B, any case), a config.json, or a folder holding one."""
    found = models.find_config(_ROOT, model)
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
    """The shape of a decoder-only model from its config.json, read through transformers' config class
    (head_dim as vLLM's get_head_size, sliding window and layer types as the model declares them)."""
    import warnings

    path = resolve_config_path(model)
    raw, hf = read_hf_config(path)
    cfg = hf.get_text_config() if hasattr(hf, "get_text_config") else hf
    missing = [k for k in ("hidden_size", "num_hidden_layers", "num_attention_heads", "vocab_size")
               if getattr(cfg, k, None) is None]
    if missing:
        raise WorkbenchError(f"{path} lacks {', '.join(missing)}: plan-memory needs a decoder-only LLM config")
    if getattr(cfg, "kv_lora_rank", None) or getattr(cfg, "num_local_experts", None) or \
            getattr(cfg, "num_experts", None):
        raise WorkbenchError(f"{path}: MLA and MoE models are not covered by plan-memory; use a dense model config")
    heads = int(cfg.num_attention_heads)
    hidden = int(cfg.hidden_size)
    # vllm/config/model.py get_head_size: head_dim when set, else hidden_size // num_attention_heads.
    head_dim = int(getattr(cfg, "head_dim", None) or hidden // heads)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch_dtype's deprecation in newer transformers
        dtype = _dtype_name(getattr(cfg, "dtype", None)) or _dtype_name(getattr(cfg, "torch_dtype", None))
    layer_types = getattr(cfg, "layer_types", None)
    name = path.parent.name if path.name == "config.json" else path.stem
    return ModelShape(
        name=name,
        model_type=str(getattr(cfg, "model_type", "") or raw.get("model_type", "")),
        hidden_size=hidden,
        num_layers=int(cfg.num_hidden_layers),
        num_heads=heads,
        num_kv_heads=int(getattr(cfg, "num_key_value_heads", None) or heads),
        head_dim=head_dim,
        intermediate_size=int(getattr(cfg, "intermediate_size", None) or 4 * hidden),
        vocab_size=int(cfg.vocab_size),
        tie_word_embeddings=bool(getattr(hf, "tie_word_embeddings", False)),
        # Qwen2's attention always has q/k/v biases; Llama's only with attention_bias.
        qkv_bias=bool(getattr(cfg, "attention_bias", False)) or getattr(cfg, "model_type", "") == "qwen2",
        config_dtype=dtype or "float32",
        max_position_embeddings=int(getattr(cfg, "max_position_embeddings", None) or 2048),
        sliding_window=_window(getattr(cfg, "sliding_window", None)),
        layer_types=tuple(layer_types) if layer_types else None,
        config_path=str(path.resolve()),
    )


def _pad(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def weight_elements(shape: ModelShape, tp: int = 1, pad_vocab: bool = True) -> int:
    """Parameters held by one GPU at tensor parallel size ``tp`` (vLLM's column/row/vocab-parallel split);
    with ``pad_vocab`` the embedding rows vLLM allocates (vocab padded to a multiple of 64, then split)."""
    h, i, d = shape.hidden_size, shape.intermediate_size, shape.head_dim
    q = shape.num_heads * d // tp
    # KV heads are split across ranks, replicated when fewer than tp (get_num_kv_heads: max(1, kv // tp)).
    kv = max(1, shape.num_kv_heads // tp) * d
    attn = h * (q + 2 * kv) + q * h + ((q + 2 * kv) if shape.qkv_bias else 0)
    mlp = 3 * h * (i // tp)  # gate_up (merged column-parallel) + down (row-parallel)
    norms = 2 * h  # input_layernorm + post_attention_layernorm, replicated
    per_layer = attn + mlp + norms
    # VocabParallelEmbedding / ParallelLMHead: pad_vocab_size(vocab, 64), then vocab_range per rank.
    vocab = -(-_pad(shape.vocab_size, VOCAB_PADDING) // tp) if pad_vocab else shape.vocab_size // tp
    embed = vocab * h
    lm_head = 0 if shape.tie_word_embeddings else vocab * h
    return shape.num_layers * per_layer + h + embed + lm_head


def resolve_model_dtype(shape: ModelShape, dtype: str = "auto", compute_capability: tuple[int, int] = (9, 0)) -> str:
    """vLLM's dtype "auto": the config's dtype, float32 checkpoints downcast (bf16 from sm80 on, else fp16)."""
    if dtype != "auto":
        if dtype not in DTYPE_BYTES:
            raise WorkbenchError(f"--dtype {dtype!r} is unknown: use one of auto, {', '.join(DTYPE_BYTES)}")
        return dtype
    preferred = "bfloat16" if compute_capability >= (8, 0) else "float16"
    cfg = shape.config_dtype
    if cfg in ("float32", "float") or cfg not in DTYPE_BYTES:
        return preferred
    if cfg == "bfloat16" and compute_capability < (8, 0):
        return preferred
    return cfg


def kv_dtype_bytes(kv_cache_dtype: str, model_dtype: str) -> int:
    """Bytes per KV element: "auto" follows the model dtype; the fp8 variants store one byte."""
    if kv_cache_dtype not in KV_CACHE_DTYPES:
        raise WorkbenchError(f"--kv-cache-dtype {kv_cache_dtype!r} is unknown: use one of "
                             f"{', '.join(KV_CACHE_DTYPES)}")
    size = KV_CACHE_DTYPES[kv_cache_dtype]
    return DTYPE_BYTES[model_dtype] if size is None else size


def kv_bytes_per_token_per_layer(shape: ModelShape, kv_bytes: int, tp: int = 1) -> int:
    """2 (K and V) x KV heads on this GPU x head_dim x bytes per element."""
    return 2 * max(1, shape.num_kv_heads // tp) * shape.head_dim * kv_bytes


def page_size_bytes(shape: ModelShape, kv_bytes: int, tp: int = 1, block_size: int = DEFAULT_BLOCK_SIZE) -> int:
    """One layer's KV block (vllm/v1/kv_cache_interface.py AttentionSpec.page_size_bytes)."""
    return block_size * kv_bytes_per_token_per_layer(shape, kv_bytes, tp)


def default_scheduler_limits(total_bytes: int, gpu_name: str, usage: str = "llm",
                             rules: kv_sizing.Rules = kv_sizing.RULES[0]) -> tuple[int, int]:
    """(max_num_batched_tokens, max_num_seqs) that vLLM picks when not given
    (vllm/engine/arg_utils.py EngineArgs.get_batch_defaults)."""
    if rules.largest_tier_bytes is not None and total_bytes >= rules.largest_tier_bytes:
        return 16384, 1024
    big = total_bytes >= 70 * GiB and "a100" not in gpu_name.lower()
    if usage == "serve":
        return (8192, 1024) if big else (2048, 256)
    return (16384, 1024) if big else (8192, 256)


def estimate_activation_bytes(shape: ModelShape, dtype_bytes: int, max_num_batched_tokens: int,
                              max_num_seqs: int, tp: int = 1) -> int:
    """Rough torch peak of vLLM's profile_run: a dummy forward of max_num_batched_tokens tokens (peak in the
    MLP: hidden + residual + gate_up + activation output) and the dummy sampler over max_num_seqs rows
    (logits in the model dtype, fp32 copy and probabilities, sorted fp32 values + int64 indices for top-p/k)."""
    t, h = max_num_batched_tokens, shape.hidden_size
    i = shape.intermediate_size // tp
    forward = t * dtype_bytes * (2 * h + 3 * i)
    vocab = _pad(shape.vocab_size, VOCAB_PADDING)
    sampler = max_num_seqs * vocab * (dtype_bytes + 4 + 4 + 12) + t * h * dtype_bytes
    return max(forward, sampler)


@dataclass(frozen=True)
class GpuMemory:
    """Total and in-use memory of the GPU being planned for (from NVML, or given by hand)."""

    index: int | None
    name: str
    total_bytes: int
    used_bytes: int
    compute_capability: tuple[int, int] = (9, 0)

    @property
    def free_bytes(self) -> int:
        return self.total_bytes - self.used_bytes


@dataclass(frozen=True)
class MemoryPlan:
    """Everything plan-memory reports, in bytes per GPU (one tensor-parallel rank)."""

    model: str
    vllm_version: str  # the release whose sizing was applied
    sizing: str  # who sized the KV cache: vLLM's own code (where from) or the workbench's model of the release
    sizing_note: str  # why it is not vLLM's own code / not this exact release ("" when nothing to say)
    tp: int
    model_dtype: str
    kv_cache_dtype: str
    kv_dtype_bytes: int
    num_layers: int
    num_kv_heads_per_gpu: int
    head_dim: int
    block_size: int
    max_model_len: int
    max_num_seqs: int
    max_num_batched_tokens: int
    parameters_per_gpu: int
    weights_bytes: int
    kv_bytes_per_token_per_layer: int
    kv_bytes_per_token: int
    page_size_bytes: int
    sliding_layers: int  # layers whose KV holds a window, not the whole request
    sliding_window: int | None
    kv_groups: int  # KV cache groups (1 unless full and sliding layers mix)
    kv_bytes_per_sequence: int  # KV of one max_model_len request, all layers (sliding ones hold their window)
    activation_bytes: int
    non_torch_bytes: int
    outside_budget_bytes: int  # CUDA context + NCCL + CUDA graphs + vLLM's 150 MiB redundancy
    reserve_bytes: int  # kept free for the other processes' growth
    gpu: GpuMemory
    gpu_memory_utilization: float
    requested_bytes: int
    kv_pool_bytes: int
    num_blocks: int
    kv_tokens: int
    max_concurrency: float
    fits: bool
    startup_ok: bool
    headroom_bytes: int  # free memory left on the GPU once this vLLM is fully up
    recommended_utilization: float
    min_utilization: float
    max_utilization: float

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> MemoryPlan:
        gpu = dict(data["gpu"])
        gpu["compute_capability"] = tuple(gpu.get("compute_capability") or (9, 0))
        return cls(**{**data, "gpu": GpuMemory(**gpu)})


def num_blocks_for(kv_pool_bytes: int, page_bytes: int, num_layers: int) -> int:
    """vllm/v1/core/kv_cache_utils.py get_num_blocks: available // page_size // num_layers (>= 0)."""
    return max(int(kv_pool_bytes // page_bytes // num_layers), 0)


def max_concurrency_for(num_blocks: int, max_model_len: int, block_size: int) -> float:
    """get_max_concurrency_for_kv_cache_config for one full-attention group: blocks / blocks per request."""
    return num_blocks / -(-max_model_len // block_size)


def _floor2(x: float) -> float:
    return math.floor(x * 100 + 1e-9) / 100


def _ceil2(x: float) -> float:
    return math.ceil(x * 100 - 1e-9) / 100


class BuiltinSizer:
    """The workbench's model of a release's KV sizing (workbench/memory/kv_sizing.py)."""

    def __init__(self, config_path: str, tp: int, rules: kv_sizing.Rules):
        self.rules = rules
        self.description = f"the workbench's model of vLLM {rules.release}'s sizing"

    def layout(self, request: kv_sizing.KvRequest) -> kv_sizing.KvLayout:
        return kv_sizing.builtin_layout(request, self.rules)

    def size(self, layout: kv_sizing.KvLayout, available: int, request: kv_sizing.KvRequest) -> kv_sizing.KvSizing:
        return kv_sizing.builtin_size(layout, available, request, self.rules)


def plan_memory(shape: ModelShape, gpu: GpuMemory, *, gpu_memory_utilization: float | None = None,
                max_model_len: int | None = None, max_num_seqs: int | None = None,
                max_num_batched_tokens: int | None = None, kv_cache_dtype: str = "auto", dtype: str = "auto",
                tp: int = 1, block_size: int = DEFAULT_BLOCK_SIZE, enforce_eager: bool = False,
                activation_bytes: int | None = None, non_torch_bytes: int | None = None,
                cudagraph_bytes: int | None = None, usage: str = "llm",
                reserve_bytes: int = RESERVE_BYTES, vllm_version: str = kv_sizing.RULES[0].release,
                sizer_factory=BuiltinSizer, sizing_note: str = "") -> MemoryPlan:
    """Size weights, activations and the KV pool as vLLM ``vllm_version`` would, and pick a
    gpu_memory_utilization. ``sizer_factory`` sizes the KV cache: the workbench's model of the release
    (default) or vLLM's own code (workbench/memory/vllm_sizing.py).

    The recommendation is the smallest utilization whose KV pool holds max_num_seqs sequences of
    max_model_len tokens, capped by what the GPU's free memory allows (other processes keep theirs).
    """
    kv = shape.num_kv_heads
    # vllm/model_executor/layers/linear.py QKVParallelLinear: KV heads split evenly or replicated evenly.
    if tp < 1 or (kv % tp if kv >= tp else tp % kv):
        raise WorkbenchError(f"--tp {tp} must divide (or be a multiple of) the {kv} KV heads of {shape.name}: "
                             f"use one of {_tp_choices(shape)}")
    if shape.num_heads % tp:
        raise WorkbenchError(f"--tp {tp} does not divide the {shape.num_heads} attention heads of {shape.name}: "
                             f"use one of {_tp_choices(shape)}")
    if gpu_memory_utilization is not None and not 0 < gpu_memory_utilization <= 1:
        raise WorkbenchError(f"--gpu-util {gpu_memory_utilization} is outside (0, 1]: give a fraction, e.g. 0.5")
    if block_size not in (1, 8, 16, 32, 64, 128, 256):
        raise WorkbenchError(f"--block-size {block_size} is no block size vLLM supports: use one of "
                             "1, 8, 16, 32, 64, 128, 256")
    max_model_len = max_model_len or shape.max_position_embeddings
    if max_model_len < 1:
        raise WorkbenchError(f"--max-model-len {max_model_len} is not positive: give the tokens per request")
    rules, rules_note = kv_sizing.rules_for(vllm_version)
    default_tokens, default_seqs = default_scheduler_limits(gpu.total_bytes, gpu.name, usage, rules)
    max_num_seqs = max_num_seqs or default_seqs
    max_num_batched_tokens = max_num_batched_tokens or default_tokens

    model_dtype = resolve_model_dtype(shape, dtype, gpu.compute_capability)
    dbytes = DTYPE_BYTES[model_dtype]
    kvb = kv_dtype_bytes(kv_cache_dtype, model_dtype)
    params = weight_elements(shape, tp)
    weights = params * dbytes
    per_token_layer = kv_bytes_per_token_per_layer(shape, kvb, tp)
    request = kv_sizing.KvRequest(
        windows=kv_sizing.layer_windows(shape.num_layers, shape.sliding_window, shape.layer_types, rules),
        num_kv_heads=max(1, kv // tp), head_size=shape.head_dim, kv_bytes=kvb, block_size=block_size,
        max_model_len=max_model_len, max_num_batched_tokens=max_num_batched_tokens)
    sizer = sizer_factory(shape.config_path, tp, rules)
    layout = sizer.layout(request)
    reserved = layout.bytes_per_block if rules.reserve_null_block else 0
    act = activation_bytes if activation_bytes is not None else estimate_activation_bytes(
        shape, dbytes, max_num_batched_tokens, max_num_seqs, tp)
    non_torch = NON_TORCH_BYTES if non_torch_bytes is None else non_torch_bytes
    graphs = 0 if enforce_eager else (CUDAGRAPH_BYTES if cudagraph_bytes is None else cudagraph_bytes)
    outside = CUDA_CONTEXT_BYTES + (NCCL_BYTES if tp > 1 else 0) + graphs + REDUNDANCY_BYTES
    non_kv = weights + act + non_torch

    total = gpu.total_bytes
    # Startup check (init_device): free memory after the context/NCCL must cover total * utilization;
    # CUDA graphs and the redundancy buffer also need to fit afterwards.
    max_util = min(1.0, _floor2((gpu.free_bytes - outside - reserve_bytes) / total))
    min_util = _ceil2((non_kv + layout.request_bytes) / total)  # the fit check: one max_model_len request
    wanted_pool = reserved + max_num_seqs * layout.blocks_per_request * layout.bytes_per_block
    want_util = _ceil2((non_kv + wanted_pool) / total)
    recommended = max(min_util, min(want_util, max_util))
    util = recommended if gpu_memory_utilization is None else gpu_memory_utilization

    requested = int(total * util)
    kv_pool = requested - non_kv
    sized = sizer.size(layout, kv_pool, request) if kv_pool > 0 else kv_sizing.KvSizing(0, 0, 0.0, False)
    sliding = [w for w in request.windows if w is not None]
    note = "; ".join(n for n in (sizing_note, rules_note) if n)
    return MemoryPlan(
        model=shape.name, vllm_version=vllm_version, sizing=sizer.description, sizing_note=note, tp=tp,
        model_dtype=model_dtype, kv_cache_dtype=kv_cache_dtype, kv_dtype_bytes=kvb,
        num_layers=shape.num_layers, num_kv_heads_per_gpu=request.num_kv_heads, head_dim=shape.head_dim,
        block_size=block_size, max_model_len=max_model_len, max_num_seqs=max_num_seqs,
        max_num_batched_tokens=max_num_batched_tokens, parameters_per_gpu=params, weights_bytes=weights,
        kv_bytes_per_token_per_layer=per_token_layer, kv_bytes_per_token=per_token_layer * shape.num_layers,
        page_size_bytes=layout.page_size_bytes, sliding_layers=len(sliding),
        sliding_window=max(sliding) if sliding else None, kv_groups=layout.num_groups,
        kv_bytes_per_sequence=layout.request_bytes - reserved, activation_bytes=act, non_torch_bytes=non_torch,
        outside_budget_bytes=outside, reserve_bytes=reserve_bytes, gpu=gpu, gpu_memory_utilization=util,
        requested_bytes=requested,
        kv_pool_bytes=kv_pool, num_blocks=sized.num_blocks, kv_tokens=sized.kv_tokens,
        max_concurrency=sized.max_concurrency,
        fits=sized.fits, startup_ok=gpu.free_bytes - CUDA_CONTEXT_BYTES - (NCCL_BYTES if tp > 1 else 0)
        >= requested, headroom_bytes=gpu.free_bytes - requested - outside,
        recommended_utilization=recommended, min_utilization=min_util, max_utilization=max_util,
    )


def _tp_choices(shape: ModelShape) -> str:
    """Tensor-parallel sizes vLLM accepts for this model (up to 16)."""
    kv = shape.num_kv_heads
    ok = [t for t in range(1, 17) if not shape.num_heads % t and not (kv % t if kv >= t else t % kv)]
    return ", ".join(map(str, ok))


def _gib(n: float) -> str:
    return f"{n / GiB:.2f} GiB"


def explain(plan: MemoryPlan) -> list[str]:
    """The plan as numbered lines a reader can check by hand, from config to recommendation."""
    g = plan.gpu
    where = f"GPU {g.index} ({g.name})" if g.index is not None else f"{g.name} (given by hand)"
    if plan.sliding_layers:
        full = plan.num_layers - plan.sliding_layers
        window = (f"{plan.sliding_layers} of {plan.num_layers} layers slide over {plan.sliding_window:,} tokens "
                  f"(hold min(window - 1 + in-flight tokens, max_model_len) + 1 block)"
                  + (f", {full} attend to all" if full else "")
                  + (f"; {plan.kv_groups} KV cache groups" if plan.kv_groups > 1 else ""))
    else:
        window = "every layer attends to the whole request"
    lines = [
        f"1. {where}: total {_gib(g.total_bytes)}, in use by others {_gib(g.used_bytes)}, free {_gib(g.free_bytes)}.",
        f"2. Weights: {plan.parameters_per_gpu:,} parameters per GPU (TP={plan.tp}) x {DTYPE_BYTES[plan.model_dtype]} "
        f"bytes ({plan.model_dtype}) = {_gib(plan.weights_bytes)}.",
        f"3. KV per token per layer: 2 (K,V) x {plan.num_kv_heads_per_gpu} KV heads x {plan.head_dim} head_dim x "
        f"{plan.kv_dtype_bytes} bytes (kv-cache-dtype {plan.kv_cache_dtype}"
        f"{'=' + plan.model_dtype if plan.kv_cache_dtype == 'auto' else ''}) = "
        f"{plan.kv_bytes_per_token_per_layer:,} bytes; "
        f"x {plan.num_layers} layers = {plan.kv_bytes_per_token:,} bytes per token.",
        f"4. Block ({plan.block_size} tokens) per layer = {plan.page_size_bytes:,} bytes; {window}; one sequence of "
        f"max_model_len {plan.max_model_len:,} = {_gib(plan.kv_bytes_per_sequence)}.",
        f"5. Peak activation of the profile run ({plan.max_num_batched_tokens:,} tokens, {plan.max_num_seqs} seqs) "
        f"~ {_gib(plan.activation_bytes)}; non-torch ~ {_gib(plan.non_torch_bytes)}.",
        f"6. Outside vLLM's budget: CUDA context{' + NCCL' if plan.tp > 1 else ''} + CUDA graphs + 150 MiB "
        f"redundancy ~ {_gib(plan.outside_budget_bytes)}.",
        f"7. gpu_memory_utilization {plan.gpu_memory_utilization:.2f} -> requested = total x util = "
        f"{_gib(plan.requested_bytes)}.",
        f"8. KV pool = requested - weights - activation - non-torch = {_gib(plan.kv_pool_bytes)} -> "
        f"{plan.num_blocks:,} blocks = {plan.kv_tokens:,} tokens (vLLM logs 'GPU KV cache size').",
        f"9. Max concurrency at {plan.max_model_len:,} tokens per request: {plan.max_concurrency:.2f}x "
        f"(max_num_seqs {plan.max_num_seqs}).",
        f"10. Utilization range: >= {plan.min_utilization:.2f} to hold one max_model_len request; <= "
        f"{plan.max_utilization:.2f} so that free - outside-budget memory - {_gib(plan.reserve_bytes)} reserve for "
        "the others still covers it.",
    ]
    if plan.min_utilization > plan.max_utilization:
        lines.append(f"11. Does NOT fit next to the other processes: free {_gib(g.free_bytes)} on the GPU, need "
                     f"~{_gib(plan.min_utilization * g.total_bytes + plan.outside_budget_bytes)}: lower "
                     "--max-model-len, use --kv-cache-dtype fp8, raise --tp, or free the GPU.")
    else:
        capped = plan.recommended_utilization >= plan.max_utilization
        why = (f"the most the free memory allows (KV for {plan.max_concurrency:.1f} of the {plan.max_num_seqs} "
               "wanted sequences at max_model_len)" if capped else
               f"the least that holds max_num_seqs {plan.max_num_seqs} x max_model_len {plan.max_model_len:,}")
        lines.append(f"11. Recommended gpu_memory_utilization={plan.recommended_utilization:.2f}: {why}; leaves "
                     f"{_gib(plan.headroom_bytes)} free for the other processes' growth.")
    if not plan.startup_ok:
        lines.append(f"!! At {plan.gpu_memory_utilization:.2f} vLLM refuses to start: free memory is below "
                     "total x util ('Free memory on device ... is less than desired GPU memory utilization').")
    elif not plan.fits:
        lines.append(f"!! At {plan.gpu_memory_utilization:.2f} the KV pool cannot hold one {plan.max_model_len:,}-"
                     "token request: vLLM raises 'To serve at least one request with the models's max seq len'.")
    return lines


# --------------------------------------------------------------------------------------- whose sizing
SIZINGS = ("auto", "vllm", "builtin")


def planning_release(fork: Path, version: str | None = None) -> tuple[str, str]:
    """The vLLM release to plan for and where that came from: --vllm-version, else the fork's release,
    else the release the project pins (planning needs no fork checkout)."""
    from workbench.container.versions import release_or_pinned

    return (version, "--vllm-version") if version else release_or_pinned(fork)


def plan(model: str, gpu: GpuMemory, *, fork: Path, vllm_version: str, sizing: str = "auto", **knobs) -> MemoryPlan:
    """plan_memory for ``vllm_version``: the workbench's model of the release first (it also checks every
    input), then - unless ``sizing`` is "builtin" - vLLM's own sizing code from the fork's source, which
    replaces it when it imports here; "vllm" makes that a requirement."""
    builtin = plan_memory(load_model_shape(model), gpu, vllm_version=vllm_version, **knobs)
    if sizing == "builtin":
        return builtin
    try:
        return plan_with_vllm(fork, plan_request(model, gpu, vllm_version=vllm_version, **knobs))
    except WorkbenchError as err:
        if sizing == "vllm":
            raise
        note = f"vLLM's own code not used: {err}"
        return MemoryPlan.from_dict({**builtin.to_dict(), "sizing_note": "; ".join(
            n for n in (note, builtin.sizing_note) if n)})


def plan_request(model: str, gpu: GpuMemory, **knobs) -> dict:
    """plan_memory's inputs as JSON (what workbench/memory/vllm_sizing.py reads in the child process)."""
    return {"model": str(resolve_config_path(model)), "gpu": asdict(gpu), **knobs}


def plan_from_request(request: dict, sizer_factory=BuiltinSizer) -> MemoryPlan:
    """plan_memory on a plan_request (the child process's side)."""
    knobs = dict(request)
    shape = load_model_shape(knobs.pop("model"))
    gpu = dict(knobs.pop("gpu"))
    gpu["compute_capability"] = tuple(gpu.get("compute_capability") or (9, 0))
    return plan_memory(shape, GpuMemory(**gpu), sizer_factory=sizer_factory, **knobs)


def plan_with_vllm(fork: Path, request: dict, python: str | None = None, timeout: int = 600) -> MemoryPlan:
    """plan_memory sized by vLLM's own code, imported from the fork's source in a child process
    (``python -m workbench.memory.vllm_sizing``); WorkbenchError (with the child's reason) when vLLM does not
    import there."""
    return plans_with_vllm(fork, [request], python, timeout)[0]


def plans_with_vllm(fork: Path, requests: list[dict], python: str | None = None,
                    timeout: int = 600) -> list[MemoryPlan]:
    """plan_with_vllm for several requests, importing vLLM once."""
    import os
    import subprocess
    import sys

    from workbench.memory.vllm_sizing import RESULT_PREFIX

    if not (Path(fork) / "vllm" / "__init__.py").is_file():
        raise WorkbenchError(f"no vLLM source at {fork}", fix="point workbench.fork at your checkout")
    path = os.pathsep.join(filter(None, [str(Path(fork).resolve()), str(_ROOT), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONPATH": path, "HF_HUB_OFFLINE": "1", "VLLM_LOGGING_LEVEL": "ERROR",
           "TRANSFORMERS_VERBOSITY": "error"}
    try:
        proc = subprocess.run([python or sys.executable, "-m", "workbench.memory.vllm_sizing"],
                              input=json.dumps(requests),
                              capture_output=True, text=True, env=env, cwd=str(fork), timeout=timeout)
    except subprocess.TimeoutExpired:
        raise WorkbenchError(f"vLLM's sizing did not finish in {timeout} s", fix="use --sizing builtin") from None
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(RESULT_PREFIX)]
    if proc.returncode != 0 or len(lines) != len(requests):
        tail = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
        raise WorkbenchError(f"vLLM from {fork} does not import here ({(tail[-1] if tail else 'no output')[:200]})",
                             fix="install its dependencies in this Python (torch, transformers), or --sizing builtin")
    return [MemoryPlan.from_dict(json.loads(line[len(RESULT_PREFIX):])) for line in lines]


def gpu_memory_from_nvml(index: int) -> GpuMemory:
    """Total and used memory of GPU ``index`` through NVML (workbench.gpus.query_gpus)."""
    from workbench.gpus import query_gpus

    gpus = query_gpus()
    by_index = {g.index: g for g in gpus}
    if index not in by_index:
        have = ", ".join(str(i) for i in sorted(by_index)) or "none"
        raise WorkbenchError(f"--gpu {index}: no such GPU on this host (GPUs: {have})")
    g = by_index[index]
    return GpuMemory(index=g.index, name=g.name, total_bytes=g.memory_total_bytes, used_bytes=g.memory_used_bytes,
                     compute_capability=tuple(g.compute_capability))


def gpu_memory_by_hand(total_gib: float, used_gib: float = 0.0, name: str = "GPU") -> GpuMemory:
    """A GPU described by hand (planning for a machine you are not on)."""
    if total_gib <= 0 or used_gib < 0 or used_gib >= total_gib:
        raise WorkbenchError(f"--total-gib {total_gib} / --used-gib {used_gib}: need 0 <= used < total")
    return GpuMemory(index=None, name=name, total_bytes=int(total_gib * GiB), used_bytes=int(used_gib * GiB))
