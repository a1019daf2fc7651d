"""plan-memory's explanation: the plan as numbered lines a reader can check by hand."""

from __future__ import annotations

from workbench.memory.budget import DTYPE_BYTES, GiB, MemoryPlan


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


