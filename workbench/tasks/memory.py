"""`invoke plan-memory`: size weights and the KV cache as vLLM 0.13.0 does and recommend a
gpu_memory_utilization that coexists with the other processes on the GPU (logic in workbench/memory.py)."""

from __future__ import annotations

import json

from invoke import task

from workbench.errors import user_errors


@task(
    name="plan-memory",
    auto_shortflags=False,
    help={
        "model": "shipped config name (e.g. TinyLlama-1.1B, Qwen2.5-0.5B, Llama-3-8B) or path to a config.json",
        "gpu_util": "evaluate this gpu_memory_utilization instead of the recommended one (0-1]",
        "max_model_len": "tokens per request (default: the config's max_position_embeddings)",
        "max_num_seqs": "concurrent sequences wanted (default: vLLM 0.13.0's default for this GPU)",
        "max_num_batched_tokens": "tokens per scheduler step, sets the profiled activation (default: vLLM's)",
        "kv_cache_dtype": "auto (model dtype), bfloat16, fp8, fp8_e4m3, fp8_e5m2, fp8_inc",
        "dtype": "model dtype: auto (vLLM's rule), bfloat16, float16, float32",
        "tp": "tensor parallel size (memory is per GPU)",
        "gpu": "GPU index whose total/in-use memory NVML reports (default 0)",
        "total_gib": "plan for a GPU of this size instead of asking NVML (e.g. 80)",
        "used_gib": "with --total-gib: memory other processes use on it",
        "block_size": "KV block size in tokens (vLLM's CUDA default 16)",
        "enforce_eager": "no CUDA graphs (as vLLM's --enforce-eager)",
        "activation_gib": "measured peak activation (vLLM logs it at start-up) instead of the estimate",
        "cudagraph_gib": "measured CUDA graph memory (vLLM logs it) instead of the 0.5 GiB estimate",
        "reserve_gib": "GiB left free for the other processes' growth (default 1)",
        "serve": "use `vllm serve` defaults for max_num_seqs/batched tokens (default: the LLM class's)",
        "json": "print the plan as JSON",
    },
)
@user_errors
def plan_memory(ctx, model=None, gpu_util=None, max_model_len=None, max_num_seqs=None, max_num_batched_tokens=None,
                kv_cache_dtype="auto", dtype="auto", tp=1, gpu=0, total_gib=None, used_gib=0.0,
                block_size=16, enforce_eager=False, activation_gib=None, cudagraph_gib=None, reserve_gib=1.0,
                serve=False, json_=False):
    """Weights, KV bytes per token, KV pool, max concurrency, headroom and a gpu_memory_utilization."""
    from workbench import memory
    from workbench.errors import WorkbenchError

    if not model:
        names = ", ".join(memory.shipped_configs())
        raise WorkbenchError(f"--model is required: one of {names}, or a path to a config.json")
    shape = memory.load_model_shape(model)
    if total_gib is not None:
        target = memory.gpu_memory_by_hand(float(total_gib), float(used_gib))
    else:
        try:
            target = memory.gpu_memory_from_nvml(int(gpu))
        except WorkbenchError as err:
            raise WorkbenchError(f"cannot read GPU {gpu} through NVML ({str(err).split(':')[0]}): run on the GPU host, "
                                 "or plan for a GPU by hand with --total-gib 80 [--used-gib 10]") from err
    gib = memory.GiB
    plan = memory.plan_memory(
        shape, target,
        gpu_memory_utilization=float(gpu_util) if gpu_util is not None else None,
        max_model_len=int(max_model_len) if max_model_len else None,
        max_num_seqs=int(max_num_seqs) if max_num_seqs else None,
        max_num_batched_tokens=int(max_num_batched_tokens) if max_num_batched_tokens else None,
        kv_cache_dtype=kv_cache_dtype, dtype=dtype, tp=int(tp), block_size=int(block_size),
        enforce_eager=enforce_eager,
        activation_bytes=int(float(activation_gib) * gib) if activation_gib is not None else None,
        cudagraph_bytes=int(float(cudagraph_gib) * gib) if cudagraph_gib is not None else None,
        usage="serve" if serve else "llm", reserve_bytes=int(float(reserve_gib) * gib),
    )
    if json_:
        print(json.dumps(plan.to_dict(), indent=2))
        return
    print(f"plan-memory: {shape.name} on vLLM 0.13.0 sizing (explained line by line)")
    for line in memory.explain(plan):
        print(f"  {line}")
    if plan.min_utilization <= plan.max_utilization:
        flags = f"--gpu-memory-utilization {plan.recommended_utilization:.2f} --max-model-len {plan.max_model_len}"
        print(f"\nvllm serve MODEL {flags}" + (f" --tensor-parallel-size {plan.tp}" if plan.tp > 1 else ""))


TASKS = [plan_memory]
