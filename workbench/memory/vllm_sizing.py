"""plan-memory with vLLM's own KV-cache sizing code: ``python -m workbench.memory.vllm_sizing`` runs in a child
process whose path holds the fork's source, so the numbers come from the fork's release itself.

What runs from vLLM: ModelConfig's head counts and head size (on the transformers config), the KV cache
spec classes (FullAttentionSpec / SlidingWindowSpec: page size, memory per request), the grouping and
block count (get_kv_cache_configs), the fit check, and get_max_concurrency_for_kv_cache_config. The
vllm_config handed to them carries the fields they read, with vLLM's CUDA defaults where a value is
not the user's (async scheduling, model runner V2): a full VllmConfig inspects the model in a child
process that needs a GPU platform. Which layers slide is decided by the release's rule
(workbench.memory.kv_sizing.layer_windows), as vLLM's model code does from ``layer_types``.

Input: a JSON list of workbench.memory.plan.plan_request objects on stdin; output: a line ``RESULT <plan JSON>``
for each.
"""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path
from types import SimpleNamespace as NS

from workbench.memory import kv_sizing


class VllmSizer:
    """A sizer (see workbench.memory.budget.plan_memory) that asks the imported vLLM."""

    def __init__(self, config_path: str, tp: int, rules: kv_sizing.Rules):
        from transformers import AutoConfig

        import vllm

        self.rules = rules
        self.where = str(Path(vllm.__file__).resolve().parent.parent)
        self.description = f"vLLM {rules.release}'s own code ({self.where})"
        self.hf = AutoConfig.from_pretrained(str(config_path))
        self.tp = tp
        try:  # 0.33.0 moved planning out of kv_cache_utils
            from vllm.v1.core import kv_cache_planning as planning
        except ImportError:
            planning = None
        from vllm.v1.core import kv_cache_utils

        self.planning = planning
        self.utils = kv_cache_utils

    # -- the vllm_config the sizing functions read ------------------------------------------------
    def _config(self, request: kv_sizing.KvRequest):
        from vllm.config.model import ModelConfig

        text = self.hf.get_text_config()
        model = NS(hf_config=self.hf, hf_text_config=text, use_mla=False, is_deepseek_mla=False,
                   is_attention_free=False, max_model_len=request.max_model_len,
                   original_max_model_len=request.max_model_len, supports_kv_cache_grouping=False,
                   architectures=list(getattr(self.hf, "architectures", None) or []), model=None,
                   revision=None)
        names = ["get_total_num_kv_heads", "get_num_kv_heads", "get_head_size", "get_sliding_window"]
        if hasattr(ModelConfig, "get_model_arch_config"):
            names.append("get_model_arch_config")
            model._supports_multimodal_for_mm_prefix = lambda: False
        for name in names:
            setattr(model, name, types.MethodType(getattr(ModelConfig, name), model))
        if hasattr(ModelConfig, "get_model_arch_config"):
            model.model_arch_config = model.get_model_arch_config()
        parallel = NS(tensor_parallel_size=self.tp, decode_context_parallel_size=1, prefill_context_parallel_size=1,
                      pipeline_parallel_size=1)
        cache = NS(num_gpu_blocks_override=None, prefix_cache_retention_interval=None,
                   block_size=request.block_size)
        scheduler = NS(disable_hybrid_kv_cache_manager=False, max_num_batched_tokens=request.max_num_batched_tokens,
                       async_scheduling=True)
        config = NS(model_config=model, parallel_config=parallel, cache_config=cache, scheduler_config=scheduler,
                    speculative_config=None, attention_config=NS(hisparse_config=None),
                    num_prefill_lookahead_tokens=0,
                    max_in_flight_tokens=self.rules.in_flight_batches * request.max_num_batched_tokens)
        try:  # 0.33.0 lays the pool out per attention backend; FlashAttention declares none: the default
            from vllm.v1.attention.backends.utils import _DEFAULT_LAYOUT_PREFERENCE

            layout = _DEFAULT_LAYOUT_PREFERENCE[0]
            cache.kv_cache_layout = layout.name
            cache.get_resolved_kv_cache_layout = lambda: layout
        except ImportError:
            pass
        return config

    def _specs(self, config, request: kv_sizing.KvRequest) -> dict:
        import torch
        from vllm.v1.kv_cache_interface import FullAttentionSpec, SlidingWindowSpec

        dtype = {1: torch.float8_e4m3fn, 2: torch.bfloat16, 4: torch.float32}[request.kv_bytes]
        heads = config.model_config.get_num_kv_heads(config.parallel_config)
        head_size = config.model_config.get_head_size()
        specs = {}
        for i, window in enumerate(request.windows):
            if window is None:
                spec = FullAttentionSpec(block_size=request.block_size, num_kv_heads=heads, head_size=head_size,
                                         dtype=dtype)
            else:
                spec = SlidingWindowSpec(block_size=request.block_size, num_kv_heads=heads, head_size=head_size,
                                         dtype=dtype, sliding_window=window)
            specs[f"model.layers.{i}.self_attn.attn"] = spec
        return specs

    def heads_and_size(self, request: kv_sizing.KvRequest) -> tuple[int, int]:
        config = self._config(request)
        return config.model_config.get_num_kv_heads(config.parallel_config), config.model_config.get_head_size()

    def _configs(self, config, specs, available: int):
        if self.planning is not None:
            groups = self.planning.get_global_kv_cache_groups(config, [specs])
            return self.planning.get_kv_cache_configs(config, [specs], [available], groups)
        return self.utils.get_kv_cache_configs(config, [specs], [available])

    def _fits(self, config, specs, available: int) -> bool:
        # On failure 0.13.0's check searches a max_model_len that would fit and leaves it in the config.
        max_model_len = config.model_config.max_model_len
        try:
            if self.planning is not None:
                self._configs(config, specs, available)
            else:
                self.utils.check_enough_kv_cache_memory(config, specs, available)
        except ValueError:
            return False
        finally:
            config.model_config.max_model_len = max_model_len
        return True

    def layout(self, request: kv_sizing.KvRequest) -> kv_sizing.KvLayout:
        config = self._config(request)
        specs = self._specs(config, request)
        page = next(iter(specs.values())).page_size_bytes
        # Size a pool that surely fits, then read the layout off vLLM's own config.
        big = 1 << 50
        (cfg,) = self._configs(config, specs, big)
        concurrency = self.utils.get_max_concurrency_for_kv_cache_config(config, cfg)
        blocks_per_request = round(cfg.num_blocks / concurrency)
        bytes_per_block = big // cfg.num_blocks  # exact: the pool holds far more blocks than a block has bytes
        groups = tuple((len(g.layer_names), getattr(_first_spec(g.kv_cache_spec), "sliding_window", None))
                       for g in cfg.kv_cache_groups)
        request_bytes = self._least_fitting(config, specs, page)
        return kv_sizing.KvLayout(page, bytes_per_block, groups, blocks_per_request, request_bytes)

    def _least_fitting(self, config, specs, page: int) -> int:
        """The smallest pool vLLM's fit check accepts, found by bisection on whole bytes."""
        low, high = 0, page
        while not self._fits(config, specs, high):
            low, high = high, high * 2
        while high - low > 1:
            mid = (low + high) // 2
            low, high = (low, mid) if self._fits(config, specs, mid) else (mid, high)
        return high

    def size(self, layout: kv_sizing.KvLayout, available: int, request: kv_sizing.KvRequest) -> kv_sizing.KvSizing:
        config = self._config(request)
        specs = self._specs(config, request)
        fits = available > 0 and self._fits(config, specs, available)
        if not fits:  # vLLM refuses to start; the pool it would have had, by the release's rules
            return kv_sizing.builtin_size(layout, available, request, self.rules)
        (cfg,) = self._configs(config, specs, available)
        concurrency = self.utils.get_max_concurrency_for_kv_cache_config(config, cfg)
        if hasattr(self.utils, "get_kv_cache_capacity"):
            tokens, _ = self.utils.get_kv_cache_capacity(config, cfg)
        else:
            tokens = cfg.num_blocks // len(cfg.kv_cache_groups) * min(
                g.kv_cache_spec.block_size for g in cfg.kv_cache_groups)
        return kv_sizing.KvSizing(cfg.num_blocks, int(tokens), concurrency, True)


def _first_spec(spec):
    inner = getattr(spec, "kv_cache_specs", None)  # UniformTypeKVCacheSpecs wraps per-layer specs
    return next(iter(inner.values())) if inner else spec


def main() -> int:
    import logging
    import os

    os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")
    logging.disable(logging.WARNING)
    from workbench.memory import plan as memory

    for request in json.loads(sys.stdin.read()):  # one import of vLLM for several plans
        plan = memory.plan_from_request(request, sizer_factory=VllmSizer)
        print(memory.RESULT_PREFIX + json.dumps(plan.to_dict()), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
