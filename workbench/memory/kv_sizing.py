"""How vLLM lays out the KV cache, per release: which layers slide, how layers are grouped, how many
blocks a pool holds, what one request needs and how many fit.

Read from the sources of the releases below (tests/memory/test_vllm_source.py runs both releases' own
code on the same inputs and checks these numbers):

- which layers slide: a layer whose ``layer_types`` entry is ``sliding_attention`` uses the config's
  ``sliding_window`` (the model code, e.g. vllm/model_executor/models/llama.py); every other layer uses
  ``CacheConfig.sliding_window``, which vllm/engine/arg_utils.py sets to the config's ``sliding_window``
  when the model is not interleaved (0.13.0) / when every layer slides or there are no layer types (0.33.0).
- vllm/v1/kv_cache_interface.py: a full-attention layer holds ``cdiv(max_model_len, block_size)`` pages per
  request; a sliding one ``cdiv(min(window - 1 + in-flight tokens, max_model_len), block_size) + 1`` pages,
  where in-flight tokens are ``max_num_batched_tokens`` (0.13.0) or that times the concurrent batches
  (0.33.0: async scheduling with model runner V2 keeps two batches in flight).
- grouping (kv_cache_utils.py 0.13.0, kv_cache_planning.py 0.33.0): one group when every layer has the same
  spec; otherwise layers of one spec are split into groups of ``group_size`` layers (the smallest spec's
  layer count, or the largest when it is less than 1.25x / 1.5x the smallest), padding the last.
- blocks = available // (page × group_size); concurrency = blocks / Σ per group ``cdiv(request bytes, page)``.
  0.33.0 holds one block back (the null block) before its fit check.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from packaging.version import InvalidVersion, Version

SLIDING = "sliding_attention"


@dataclass(frozen=True)
class Rules:
    """The sizing rules of one vLLM release (see the module docstring for where each comes from)."""

    release: str
    in_flight_batches: int  # batches scheduled but not yet settled that a sliding window keeps blocks for
    window_when_uniform_only: bool  # 0.13.0: CacheConfig.sliding_window unless interleaved; 0.33.0: all sliding
    group_pad_ratio: float  # group size = largest spec's layer count when below ratio x the smallest
    reserve_null_block: bool  # the fit check plans against the pool less one block
    tokens_from_concurrency: bool  # "KV cache size: N tokens" = concurrency x max_model_len (0.33.0)
    largest_tier_bytes: int | None  # GPUs at or above this get the largest scheduler defaults (0.33.0: 160 GiB)


RULES = (
    Rules("0.13.0", 1, False, 1.25, False, False, None),
    Rules("0.33.0", 2, True, 1.5, True, True, 160 << 30),
)


def rules_for(version: str) -> tuple[Rules, str]:
    """The rules of the newest modelled release at or below ``version``, and a note when that is not
    ``version`` itself (a release between two modelled ones is sized by the older one's rules)."""
    try:
        wanted = Version(version)
    except InvalidVersion:
        return RULES[0], f"vLLM {version!r} is not a release version: sized by {RULES[0].release}'s rules"
    below = [r for r in RULES if Version(r.release) <= wanted]
    if not below:
        return RULES[0], f"vLLM {version} is older than every modelled release: sized by {RULES[0].release}'s rules"
    chosen = below[-1]
    if Version(chosen.release) == wanted:
        return chosen, ""
    return chosen, f"vLLM {version} is sized by {chosen.release}'s rules (the newest modelled release before it)"


def layer_windows(num_layers: int, sliding_window: int | None, layer_types: tuple[str, ...] | None,
                  rules: Rules) -> tuple[int | None, ...]:
    """Each layer's sliding window (None: full attention), as the release decides it."""
    window = sliding_window or None  # 0 means "no sliding window" (vllm/config/model.py)
    kinds = tuple(layer_types or ())
    if rules.window_when_uniform_only:
        model_level = window if not kinds or all(k == SLIDING for k in kinds) else None
    else:
        model_level = window if len(set(kinds)) <= 1 else None
    return tuple(window if i < len(kinds) and kinds[i] == SLIDING else model_level for i in range(num_layers))


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


@dataclass(frozen=True)
class KvRequest:
    """What the KV layout depends on, per GPU."""

    windows: tuple[int | None, ...]  # per layer
    num_kv_heads: int
    head_size: int
    kv_bytes: int
    block_size: int
    max_model_len: int
    max_num_batched_tokens: int


@dataclass(frozen=True)
class KvLayout:
    """The pool's shape for a request (independent of how much memory the pool gets)."""

    page_size_bytes: int  # one layer's block
    bytes_per_block: int  # one block id across the layers of a group (pool bytes per block)
    groups: tuple[tuple[int, int | None], ...]  # (layers, window) of each group
    blocks_per_request: int  # block ids one max_model_len request takes, summed over the groups
    request_bytes: int  # memory the fit check asks for one max_model_len request (with any reserved block)

    @property
    def num_groups(self) -> int:
        return len(self.groups)


@dataclass(frozen=True)
class KvSizing:
    """A pool of a given size: blocks, tokens, concurrency, and whether one request fits."""

    num_blocks: int
    kv_tokens: int
    max_concurrency: float
    fits: bool


def page_size_bytes(num_kv_heads: int, head_size: int, kv_bytes: int, block_size: int) -> int:
    """AttentionSpec.page_size_bytes: K and V of block_size tokens for one layer."""
    return 2 * block_size * num_kv_heads * head_size * kv_bytes


def layer_request_bytes(window: int | None, request: KvRequest, rules: Rules, page: int) -> int:
    """One layer's memory for one max_model_len request (spec.max_memory_usage_bytes)."""
    if window is None:
        return _cdiv(request.max_model_len, request.block_size) * page
    tokens = min(window - 1 + rules.in_flight_batches * request.max_num_batched_tokens, request.max_model_len)
    return (_cdiv(tokens, request.block_size) + 1) * page


def group_layers(windows: tuple[int | None, ...], pad_ratio: float) -> tuple[tuple[int, int | None], ...]:
    """(layers, window) per KV cache group: one group when all layers agree, else groups of equal size."""
    counts = Counter(windows)  # insertion order: first layer's spec first, as vLLM's dict
    if len(counts) == 1:
        ((window, n),) = counts.items()
        return ((n, window),)
    smallest, largest = min(counts.values()), max(counts.values())
    size = largest if largest < smallest * pad_ratio else smallest
    groups = []
    for window, n in counts.items():
        groups += [(size, window)] * _cdiv(n, size)
    return tuple(groups)


def builtin_layout(request: KvRequest, rules: Rules) -> KvLayout:
    """The layout by the release's rules (the arithmetic of the module docstring)."""
    page = page_size_bytes(request.num_kv_heads, request.head_size, request.kv_bytes, request.block_size)
    groups = group_layers(request.windows, rules.group_pad_ratio)
    group_size = max(n for n, _ in groups)
    bytes_per_block = page * group_size
    blocks = sum(_cdiv(layer_request_bytes(w, request, rules, page), page) for _, w in groups)
    if rules.reserve_null_block:
        request_bytes = bytes_per_block * (blocks + 1)
    else:  # check_enough_kv_cache_memory sums the layers themselves (no padding)
        request_bytes = sum(layer_request_bytes(w, request, rules, page) for w in request.windows)
    return KvLayout(page, bytes_per_block, groups, blocks, request_bytes)


def builtin_size(layout: KvLayout, available: int, request: KvRequest, rules: Rules) -> KvSizing:
    """Blocks, tokens and concurrency of a pool of ``available`` bytes."""
    blocks = max(int(available // layout.bytes_per_block), 0)
    concurrency = blocks / layout.blocks_per_request
    if rules.tokens_from_concurrency:
        tokens = int(concurrency * request.max_model_len)
    else:
        tokens = blocks // layout.num_groups * request.block_size
    fits = available > (layout.bytes_per_block if rules.reserve_null_block else 0) and \
        available >= layout.request_bytes
    return KvSizing(blocks, tokens, concurrency, fits)
