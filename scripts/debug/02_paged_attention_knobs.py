#!/usr/bin/env python3
"""Step 2: PagedAttention knobs - block size, gpu_memory_utilization, max_num_seqs, prefix caching - and
what each does to the KV cache vLLM allocates (blocks, tokens, concurrency), next to plan-memory's figure.

Each setting runs in a fresh child process (one engine per process frees its GPU memory on exit).
Breakpoints: vllm/v1/core/kv_cache_utils.py get_kv_cache_configs, vllm/v1/core/block_pool.py BlockPool.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

from _common import PROMPTS, engine_kwargs, in_process_engine, kv_cache_report, parser

SETTINGS = [
    {"block_size": 16},
    {"block_size": 32},
    {"block_size": 16, "max_num_seqs": 4},
    {"block_size": 16, "enable_prefix_caching": False},
]


def run_one(args, knobs: dict) -> None:
    in_process_engine()
    from vllm import LLM, SamplingParams

    llm = LLM(**engine_kwargs(args, **knobs))
    print(f"{knobs}: {kv_cache_report(llm)}")
    shared = "You are a helpful assistant that answers in one sentence. "  # prefix caching reuses its blocks
    outs = llm.generate([shared + p for p in PROMPTS], SamplingParams(temperature=0.0, max_tokens=args.max_tokens))
    print(f"{knobs}: generated {sum(len(o.outputs[0].token_ids) for o in outs)} tokens")


def main() -> int:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--one", help=argparse.SUPPRESS)  # internal: run one JSON setting in this process
    args = p.parse_args()
    if args.one:
        run_one(args, json.loads(args.one))
        return 0
    argv = sys.argv[1:]
    failed = 0
    for knobs in SETTINGS:
        print(f"== {knobs}", flush=True)
        failed |= subprocess.call([sys.executable, __file__, *argv, "--one", json.dumps(knobs)]) != 0
    print("Compare with: invoke plan-memory --model TinyLlama-1.1B --gpu-util "
          f"{args.gpu_memory_utilization} --max-model-len {args.max_model_len} --gpu 0")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
