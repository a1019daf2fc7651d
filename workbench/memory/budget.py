"""vLLM's GPU memory budget for one model and GPU: weights, activations, the KV pool, concurrency, and a
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

import math
from dataclasses import asdict, dataclass

from workbench.errors import WorkbenchError
from workbench.memory import kv_sizing
from workbench.memory.model_shape import ModelShape, weight_elements

GiB = 1 << 30
MiB = 1 << 20

# vllm/platforms/cuda.py check_and_update_config: block_size defaults to 16 on CUDA.
DEFAULT_BLOCK_SIZE = 16
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
    return 2 * shape.dims.kv_heads_per_rank(tp) * shape.dims.head_dim * kv_bytes


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
    t, h = max_num_batched_tokens, shape.dims.hidden_size
    i = shape.dims.intermediate_size // tp
    forward = t * dtype_bytes * (2 * h + 3 * i)
    vocab = shape.dims.vocab_rows_per_rank(1)  # the sampler sees the whole (padded) vocabulary
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
    dims = shape.dims
    problem = dims.tp_problem(tp)  # the split vLLM's parallel linears accept (the kernels package's rule)
    if problem:
        raise WorkbenchError(f"--tp {problem} of {dims.name}: use one of {', '.join(map(str, dims.tp_choices()))}")
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
        windows=kv_sizing.layer_windows(dims.num_layers, shape.sliding_window, shape.layer_types, rules),
        num_kv_heads=dims.kv_heads_per_rank(tp), head_size=dims.head_dim, kv_bytes=kvb, block_size=block_size,
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
        model=dims.name, vllm_version=vllm_version, sizing=sizer.description, sizing_note=note, tp=tp,
        model_dtype=model_dtype, kv_cache_dtype=kv_cache_dtype, kv_dtype_bytes=kvb,
        num_layers=dims.num_layers, num_kv_heads_per_gpu=request.num_kv_heads, head_dim=dims.head_dim,
        block_size=block_size, max_model_len=max_model_len, max_num_seqs=max_num_seqs,
        max_num_batched_tokens=max_num_batched_tokens, parameters_per_gpu=params, weights_bytes=weights,
        kv_bytes_per_token_per_layer=per_token_layer, kv_bytes_per_token=per_token_layer * dims.num_layers,
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
