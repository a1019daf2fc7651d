"""`invoke plan-memory`: size weights and the KV cache as the fork's vLLM release does and recommend a
gpu_memory_utilization that coexists with the other processes on the GPU (logic in workbench/memory/)."""

from __future__ import annotations

import json

from invoke import task

from workbench import ui
from workbench.config import settings_from_context


@task(
    name="plan-memory",
    auto_shortflags=False,
    help={
        "model": "shipped config name (e.g. TinyLlama-1.1B, Qwen2.5-0.5B, Llama-3-8B) or path to a config.json",
        "gpu_util": "evaluate this gpu_memory_utilization instead of the recommended one, in (0, 1]",
        "max_model_len": "tokens per request (default: the config's max_position_embeddings)",
        "max_num_seqs": "concurrent sequences wanted (default: vLLM's default for this GPU)",
        "max_num_batched_tokens": "tokens per scheduler step, sets the profiled activation (default: vLLM's)",
        "kv_cache_dtype": "auto (model dtype), bfloat16, fp8, fp8_e4m3, fp8_e5m2, fp8_inc",
        "dtype": "model dtype: auto (vLLM's rule), bfloat16, float16, float32",
        "tp": "tensor parallel size (memory is per GPU; default 1)",
        "gpu": "GPU index whose total/in-use memory NVML reports (default 0)",
        "total_gib": "plan for a GPU of this size instead of asking NVML (e.g. 80)",
        "used_gib": "with --total-gib: memory other processes use on it (default 0)",
        "block_size": "KV block size in tokens (default 16, vLLM's CUDA default)",
        "enforce_eager": "no CUDA graphs (as vLLM's --enforce-eager)",
        "activation_gib": "measured peak activation (vLLM logs it at start-up) instead of the estimate",
        "cudagraph_gib": "measured CUDA graph memory (vLLM logs it) instead of the 0.5 GiB estimate",
        "reserve_gib": "GiB left free for the other processes' growth (default 1)",
        "serve": "use `vllm serve` defaults for max_num_seqs/batched tokens (default: the LLM class's)",
        "vllm_version": "size as this vLLM release (default: the fork's release, from its tag or _version.py)",
        "sizing": "auto (vLLM's own code when the fork's vllm imports here, else the workbench's model of the "
                  "release), vllm (require vLLM's code), builtin (the model only; fast)",
        "json": "print the plan as JSON",
    },
)
def plan_memory(ctx, model=None, gpu_util=None, max_model_len=None, max_num_seqs=None, max_num_batched_tokens=None,
                kv_cache_dtype="auto", dtype="auto", tp=None, gpu=None, total_gib=None, used_gib=None,
                block_size=None, enforce_eager=False, activation_gib=None, cudagraph_gib=None, reserve_gib=None,
                serve=False, vllm_version=None, sizing="auto", json_=False):
    """Weights, KV bytes per token, KV pool, max concurrency, headroom and a gpu_memory_utilization."""
    from workbench import flags
    from workbench.errors import WorkbenchError
    from workbench.memory import budget, model_shape, report
    from workbench.memory import plan as planning

    gib = budget.GiB
    # Every number first: a bad value stops here, before NVML or vLLM are asked anything.
    knobs = dict(
        gpu_memory_utilization=flags.real("--gpu-util", gpu_util, above=0, maximum=1, example="0.9"),
        max_model_len=flags.integer("--max-model-len", max_model_len, minimum=1, example="8192"),
        max_num_seqs=flags.integer("--max-num-seqs", max_num_seqs, minimum=1, example="64"),
        max_num_batched_tokens=flags.integer("--max-num-batched-tokens", max_num_batched_tokens, minimum=1,
                                             example="8192"),
        kv_cache_dtype=kv_cache_dtype, dtype=dtype,
        tp=flags.integer("--tp", tp, minimum=1, example="2") or 1,
        block_size=flags.integer("--block-size", block_size, minimum=1, example="16") or budget.DEFAULT_BLOCK_SIZE,
        enforce_eager=enforce_eager, usage="serve" if serve else "llm",
    )
    total = flags.real("--total-gib", total_gib, above=0, example="80")
    used = flags.real("--used-gib", used_gib, minimum=0, example="10") or 0.0
    index = flags.integer("--gpu", gpu, minimum=0, example="0") or 0
    activation = flags.real("--activation-gib", activation_gib, minimum=0, example="2.5")
    cudagraph = flags.real("--cudagraph-gib", cudagraph_gib, minimum=0, example="0.5")
    reserve = flags.real("--reserve-gib", reserve_gib, minimum=0, example="1")
    if used_gib is not None and total is None:
        raise WorkbenchError("--used-gib goes with --total-gib (NVML reports the memory in use): add --total-gib")
    if sizing not in planning.SIZINGS:
        raise WorkbenchError(f"--sizing {sizing!r} is unknown: use one of {', '.join(planning.SIZINGS)}")
    knobs.update(activation_bytes=int(activation * gib) if activation is not None else None,
                 cudagraph_bytes=int(cudagraph * gib) if cudagraph is not None else None,
                 reserve_bytes=int(reserve * gib) if reserve is not None else budget.RESERVE_BYTES)
    if not model:
        names = ", ".join(model_shape.shipped_configs())
        raise WorkbenchError(f"--model is required: one of {names}, or a path to a config.json")
    model_shape.resolve_config_path(model)
    if total is not None:
        target = budget.gpu_memory_by_hand(total, used)
    else:
        try:
            target = budget.gpu_memory_from_nvml(index)
        except WorkbenchError as err:
            raise WorkbenchError(f"cannot read GPU {index} through NVML ({err.parts()[0]}): run on the GPU host, "
                                 "or plan for a GPU by hand with --total-gib 80 [--used-gib 10]") from err
    fork = settings_from_context(ctx).fork_path
    version, version_source = planning.planning_release(fork, vllm_version)
    plan = planning.plan(model, target, fork=fork, vllm_version=version, sizing=sizing, **knobs)
    if json_:
        ui.console.out(json.dumps({**plan.to_dict(), "vllm_version_source": version_source}, indent=2))
        return
    ui.console.out(f"plan-memory: {plan.model} on vLLM {plan.vllm_version}, sized by {plan.sizing}")
    ui.console.out(f"  release: {version_source}")
    if plan.sizing_note:
        ui.console.out(f"  note: {plan.sizing_note}")
    for line in report.explain(plan):
        ui.console.out(f"  {line}")
    if plan.min_utilization <= plan.max_utilization:
        flags_ = f"--gpu-memory-utilization {plan.recommended_utilization:.2f} --max-model-len {plan.max_model_len}"
        ui.console.out(f"\nvllm serve MODEL {flags_}" + (f" --tensor-parallel-size {plan.tp}" if plan.tp > 1 else ""))


TASKS = [plan_memory]
