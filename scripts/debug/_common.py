"""Flags and engine settings shared by the learning-path scripts (scripts/debug/0N_*.py).

Nothing here imports vLLM: every script parses its flags (``--help``) anywhere, and imports vLLM
only inside main(), so a breakpoint set before that line still hits.
"""

from __future__ import annotations

import argparse
import os

# A small LLaMA-architecture model: 22 layers, GQA with 4 KV heads, 2.2 GB in bf16 - the same code path
# (vllm/model_executor/models/llama.py) as Llama-3-8B at a size that loads in seconds.
DEFAULT_MODEL = "TinyLlama/TinyLlama-1.1B-Chat-v1.0"
PROMPTS = [
    "The capital of France is",
    "Paged attention stores the KV cache in",
    "A CUDA kernel is",
    "The fastest way to multiply two matrices on a GPU is",
]


def parser(description: str) -> argparse.ArgumentParser:
    """The flags every step takes: model, dtype, memory and the debuggable switch."""
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model", default=os.environ.get("WORKBENCH_DEBUG_MODEL", DEFAULT_MODEL),
                   help="HF model id or local path (env WORKBENCH_DEBUG_MODEL); HF_HOME is /cache/huggingface")
    p.add_argument("--dtype", default="auto", help="model dtype: auto, bfloat16, float16")
    p.add_argument("--max-model-len", type=int, default=2048, help="tokens per request")
    p.add_argument("--gpu-memory-utilization", type=float, default=0.5,
                   help="fraction of the GPU vLLM may take (see `invoke plan-memory`)")
    p.add_argument("--max-tokens", type=int, default=32, help="tokens to generate per prompt")
    p.add_argument("--fast", action="store_true",
                   help="CUDA graphs + torch.compile (vLLM's defaults); breakpoints in model code then miss")
    return p


def engine_kwargs(args: argparse.Namespace, **extra) -> dict:
    """Keyword arguments for vllm.LLM / AsyncEngineArgs. Debuggable by default: no CUDA graphs
    (enforce_eager) and no torch.compile (compilation mode 0), so model forward() runs as Python each step."""
    kwargs = dict(model=args.model, dtype=args.dtype, max_model_len=args.max_model_len,
                  gpu_memory_utilization=args.gpu_memory_utilization, seed=0)
    if not args.fast:
        kwargs.update(enforce_eager=True, compilation_config={"mode": 0})
    kwargs.update(extra)
    return kwargs


def in_process_engine() -> None:
    """V1 runs the engine core in a child process by default; breakpoints in the model need it in this one."""
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")


def kv_cache_report(llm) -> str:
    """KV blocks/tokens vLLM allocated (readable when the engine core runs in this process)."""
    cfg = llm.llm_engine.vllm_config.cache_config
    if cfg.num_gpu_blocks is None:
        return "KV cache: run with VLLM_ENABLE_V1_MULTIPROCESSING=0 to read num_gpu_blocks here"
    return (f"KV cache: {cfg.num_gpu_blocks} blocks x {cfg.block_size} tokens = "
            f"{cfg.num_gpu_blocks * cfg.block_size} tokens (kv_cache_dtype={cfg.cache_dtype})")
