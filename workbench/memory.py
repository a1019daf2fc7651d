"""GPU memory planning for vLLM 0.13.0: weights, KV cache, concurrency and a gpu_memory_utilization that
leaves room for the other processes on the GPU.

The arithmetic follows vLLM 0.13.0's own sizing (read from its source, checked by
tests/test_memory_vllm_source.py against the real classes):

- vllm/v1/worker/gpu_worker.py ``Worker.init_device``: after the CUDA context and NCCL exist, vLLM takes
  a snapshot and sets ``requested_memory = total_memory * gpu_memory_utilization``; it refuses to start
  when the free memory then is below that (``ValueError: Free memory on device ...``).
- ``Worker.determine_available_memory`` with vllm/utils/mem_utils.py ``memory_profiling``: KV cache
  memory = requested_memory - (weights + peak activation of a dummy batch of max_num_batched_tokens +
  non-torch increase).
- vllm/v1/kv_cache_interface.py ``AttentionSpec.page_size_bytes`` = 2 * block_size * num_kv_heads *
  head_size * dtype bytes; vllm/v1/core/kv_cache_utils.py ``get_num_blocks`` = available // page_size //
  num_layers; ``get_max_concurrency_for_kv_cache_config`` = num_blocks / cdiv(max_model_len, block_size).
- ``Worker.compile_or_warm_up_model`` captures CUDA graphs *after* the KV cache is allocated: that
  memory comes on top of the requested budget, as do the CUDA context and NCCL buffers.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

from workbench.errors import WorkbenchError

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

_ROOT = Path(__file__).resolve().parent.parent
# Shipped model configs live in the kernels package (custom_kernels/custom_kernels/configs/<name>/),
# names matched case-insensitively (TinyLlama-1.1B finds tinyllama-1.1b).
CONFIGS_DIR = _ROOT / "custom_kernels" / "custom_kernels" / "configs"
CONFIG_DIRS = (CONFIGS_DIR,)


@dataclass(frozen=True)
class ModelShape:
    """What memory planning needs from a Hugging Face config.json (decoder-only, dense attention)."""

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

    @property
    def parameters(self) -> int:
        """Parameter count of the whole model (embeddings, attention, MLP, norms, lm_head unless tied)."""
        return weight_elements(self, tp=1, pad_vocab=False)


def _shipped(configs_dirs: tuple[Path, ...]) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for folder in configs_dirs:
        for cfg in sorted(folder.glob("*/config.json")):
            found.setdefault(cfg.parent.name.lower(), cfg)
    return found


def shipped_configs(configs_dirs: tuple[Path, ...] = CONFIG_DIRS) -> list[str]:
    """Names of the model configs shipped with the workbench (see CONFIG_DIRS)."""
    return sorted(cfg.parent.name for cfg in _shipped(configs_dirs).values())


def resolve_config_path(model: str, configs_dirs: tuple[Path, ...] = CONFIG_DIRS) -> Path:
    """A shipped config name (e.g. TinyLlama-1.1B, any case), a config.json, or a folder holding one."""
    shipped = _shipped(configs_dirs).get(model.lower())
    if "/" not in model and shipped is not None:
        return shipped
    path = Path(model).expanduser()
    if path.is_dir():
        path = path / "config.json"
    if path.is_file():
        return path
    names = ", ".join(shipped_configs(configs_dirs)) or "none"
    raise WorkbenchError(f"--model {model!r} is neither a shipped config ({names}) nor a config.json path")


def load_model_shape(model: str, configs_dirs: tuple[Path, ...] = CONFIG_DIRS) -> ModelShape:
    """Read the shape of a decoder-only model from its config.json (head_dim as vLLM's get_head_size)."""
    path = resolve_config_path(model, configs_dirs)
    try:
        cfg = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise WorkbenchError(f"cannot read {path}: {err}; pass a Hugging Face config.json") from err
    cfg = cfg.get("text_config", cfg) if "hidden_size" not in cfg else cfg
    missing = [k for k in ("hidden_size", "num_hidden_layers", "num_attention_heads", "vocab_size") if k not in cfg]
    if missing:
        raise WorkbenchError(f"{path} lacks {', '.join(missing)}: plan-memory needs a decoder-only LLM config")
    if cfg.get("kv_lora_rank") or cfg.get("num_local_experts") or cfg.get("num_experts"):
        raise WorkbenchError(f"{path}: MLA and MoE models are not covered by plan-memory; use a dense model config")
    heads = int(cfg["num_attention_heads"])
    hidden = int(cfg["hidden_size"])
    # vllm/config/model.py get_head_size: head_dim when set, else hidden_size // num_attention_heads.
    head_dim = int(cfg.get("head_dim") or hidden // heads)
    name = path.parent.name if path.name == "config.json" else path.stem
    return ModelShape(
        name=name,
        model_type=str(cfg.get("model_type", "")),
        hidden_size=hidden,
        num_layers=int(cfg["num_hidden_layers"]),
        num_heads=heads,
        num_kv_heads=int(cfg.get("num_key_value_heads") or heads),
        head_dim=head_dim,
        intermediate_size=int(cfg.get("intermediate_size") or 4 * hidden),
        vocab_size=int(cfg["vocab_size"]),
        tie_word_embeddings=bool(cfg.get("tie_word_embeddings", False)),
        # Qwen2's attention always has q/k/v biases; Llama's only with attention_bias.
        qkv_bias=bool(cfg.get("attention_bias", False)) or cfg.get("model_type") == "qwen2",
        config_dtype=str(cfg.get("torch_dtype") or cfg.get("dtype") or "float32"),
        max_position_embeddings=int(cfg.get("max_position_embeddings") or 2048),
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
            raise WorkbenchError(f"--dtype {dtype!r} is not one of auto, {', '.join(DTYPE_BYTES)}")
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
        raise WorkbenchError(f"--kv-cache-dtype {kv_cache_dtype!r} is not one of {', '.join(KV_CACHE_DTYPES)}")
    size = KV_CACHE_DTYPES[kv_cache_dtype]
    return DTYPE_BYTES[model_dtype] if size is None else size


def kv_bytes_per_token_per_layer(shape: ModelShape, kv_bytes: int, tp: int = 1) -> int:
    """2 (K and V) x KV heads on this GPU x head_dim x bytes per element."""
    return 2 * max(1, shape.num_kv_heads // tp) * shape.head_dim * kv_bytes


def page_size_bytes(shape: ModelShape, kv_bytes: int, tp: int = 1, block_size: int = DEFAULT_BLOCK_SIZE) -> int:
    """One layer's KV block (vllm/v1/kv_cache_interface.py AttentionSpec.page_size_bytes)."""
    return block_size * kv_bytes_per_token_per_layer(shape, kv_bytes, tp)


def default_scheduler_limits(total_bytes: int, gpu_name: str, usage: str = "llm") -> tuple[int, int]:
    """(max_num_batched_tokens, max_num_seqs) that vLLM 0.13.0 picks when not given
    (vllm/engine/arg_utils.py _set_default_max_num_seqs_and_batched_tokens_args)."""
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
    kv_bytes_per_sequence: int
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


def num_blocks_for(kv_pool_bytes: int, page_bytes: int, num_layers: int) -> int:
    """vllm/v1/core/kv_cache_utils.py get_num_blocks: available // page_size // num_layers (>= 0)."""
    return max(int(kv_pool_bytes // page_bytes // num_layers), 0)


def max_concurrency_for(num_blocks: int, max_model_len: int, block_size: int) -> float:
    """get_max_concurrency_for_kv_cache_config for one uniform group: blocks / blocks per full request."""
    return num_blocks / -(-max_model_len // block_size)


def _floor2(x: float) -> float:
    return math.floor(x * 100 + 1e-9) / 100


def _ceil2(x: float) -> float:
    return math.ceil(x * 100 - 1e-9) / 100


def plan_memory(shape: ModelShape, gpu: GpuMemory, *, gpu_memory_utilization: float | None = None,
                max_model_len: int | None = None, max_num_seqs: int | None = None,
                max_num_batched_tokens: int | None = None, kv_cache_dtype: str = "auto", dtype: str = "auto",
                tp: int = 1, block_size: int = DEFAULT_BLOCK_SIZE, enforce_eager: bool = False,
                activation_bytes: int | None = None, non_torch_bytes: int | None = None,
                cudagraph_bytes: int | None = None, usage: str = "llm",
                reserve_bytes: int = RESERVE_BYTES) -> MemoryPlan:
    """Size weights, activations and the KV pool as vLLM 0.13.0 would, and pick a gpu_memory_utilization.

    The recommendation is the smallest utilization whose KV pool holds max_num_seqs sequences of
    max_model_len tokens, capped by what the GPU's free memory allows (other processes keep theirs).
    """
    kv = shape.num_kv_heads
    # vllm/model_executor/layers/linear.py QKVParallelLinear: KV heads split evenly or replicated evenly.
    if tp < 1 or (kv % tp if kv >= tp else tp % kv):
        raise WorkbenchError(f"--tp {tp} must divide (or be a multiple of) the {kv} KV heads of {shape.name}")
    if shape.num_heads % tp:
        raise WorkbenchError(f"--tp {tp} does not divide {shape.num_heads} attention heads of {shape.name}")
    if gpu_memory_utilization is not None and not 0 < gpu_memory_utilization <= 1:
        raise WorkbenchError(f"--gpu-util {gpu_memory_utilization} must be in (0, 1], e.g. 0.5")
    if block_size not in (1, 8, 16, 32, 64, 128, 256):
        raise WorkbenchError(f"--block-size {block_size} is not one of 1, 8, 16, 32, 64, 128, 256")
    max_model_len = max_model_len or shape.max_position_embeddings
    if max_model_len < 1:
        raise WorkbenchError(f"--max-model-len {max_model_len} must be positive")
    default_tokens, default_seqs = default_scheduler_limits(gpu.total_bytes, gpu.name, usage)
    max_num_seqs = max_num_seqs or default_seqs
    max_num_batched_tokens = max_num_batched_tokens or default_tokens

    model_dtype = resolve_model_dtype(shape, dtype, gpu.compute_capability)
    dbytes = DTYPE_BYTES[model_dtype]
    kvb = kv_dtype_bytes(kv_cache_dtype, model_dtype)
    params = weight_elements(shape, tp)
    weights = params * dbytes
    per_token_layer = kv_bytes_per_token_per_layer(shape, kvb, tp)
    page = page_size_bytes(shape, kvb, tp, block_size)
    per_seq = -(-max_model_len // block_size) * page * shape.num_layers
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
    min_util = _ceil2((non_kv + per_seq) / total)  # check_enough_kv_cache_memory: one max_model_len request
    want_util = _ceil2((non_kv + max_num_seqs * per_seq) / total)
    recommended = max(min_util, min(want_util, max_util))
    util = recommended if gpu_memory_utilization is None else gpu_memory_utilization

    requested = int(total * util)
    kv_pool = requested - non_kv
    blocks = num_blocks_for(kv_pool, page, shape.num_layers) if kv_pool > 0 else 0
    return MemoryPlan(
        model=shape.name, tp=tp, model_dtype=model_dtype, kv_cache_dtype=kv_cache_dtype, kv_dtype_bytes=kvb,
        num_layers=shape.num_layers, num_kv_heads_per_gpu=max(1, shape.num_kv_heads // tp), head_dim=shape.head_dim,
        block_size=block_size, max_model_len=max_model_len, max_num_seqs=max_num_seqs,
        max_num_batched_tokens=max_num_batched_tokens, parameters_per_gpu=params, weights_bytes=weights,
        kv_bytes_per_token_per_layer=per_token_layer, kv_bytes_per_token=per_token_layer * shape.num_layers,
        page_size_bytes=page, kv_bytes_per_sequence=per_seq, activation_bytes=act, non_torch_bytes=non_torch,
        outside_budget_bytes=outside, reserve_bytes=reserve_bytes, gpu=gpu, gpu_memory_utilization=util,
        requested_bytes=requested,
        kv_pool_bytes=kv_pool, num_blocks=blocks, kv_tokens=blocks * block_size,
        max_concurrency=max_concurrency_for(blocks, max_model_len, block_size),
        fits=kv_pool >= per_seq, startup_ok=gpu.free_bytes - CUDA_CONTEXT_BYTES - (NCCL_BYTES if tp > 1 else 0)
        >= requested, headroom_bytes=gpu.free_bytes - requested - outside,
        recommended_utilization=recommended, min_utilization=min_util, max_utilization=max_util,
    )


def _gib(n: float) -> str:
    return f"{n / GiB:.2f} GiB"


def explain(plan: MemoryPlan) -> list[str]:
    """The plan as numbered lines a reader can check by hand, from config to recommendation."""
    g = plan.gpu
    where = f"GPU {g.index} ({g.name})" if g.index is not None else f"{g.name} (given by hand)"
    lines = [
        f"1. {where}: total {_gib(g.total_bytes)}, in use by others {_gib(g.used_bytes)}, free {_gib(g.free_bytes)}.",
        f"2. Weights: {plan.parameters_per_gpu:,} parameters per GPU (TP={plan.tp}) x {DTYPE_BYTES[plan.model_dtype]} "
        f"bytes ({plan.model_dtype}) = {_gib(plan.weights_bytes)}.",
        f"3. KV per token per layer: 2 (K,V) x {plan.num_kv_heads_per_gpu} KV heads x {plan.head_dim} head_dim x "
        f"{plan.kv_dtype_bytes} bytes (kv-cache-dtype {plan.kv_cache_dtype}"
        f"{'=' + plan.model_dtype if plan.kv_cache_dtype == 'auto' else ''}) = "
        f"{plan.kv_bytes_per_token_per_layer:,} bytes; "
        f"x {plan.num_layers} layers = {plan.kv_bytes_per_token:,} bytes per token.",
        f"4. Block ({plan.block_size} tokens) per layer = {plan.page_size_bytes:,} bytes; one sequence of "
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
