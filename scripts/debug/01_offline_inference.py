#!/usr/bin/env python3
"""Step 1: offline inference on a small LLaMA-architecture model with the engine in this process.

Set a breakpoint in vllm/model_executor/models/llama.py (LlamaAttention.forward, LlamaMLP.forward) or
vllm/v1/worker/gpu_model_runner.py (GPUModelRunner.execute_model) and start the VS Code configuration
"1 offline inference": VLLM_ENABLE_V1_MULTIPROCESSING=0 keeps the engine core here, and enforce_eager +
compilation mode 0 make forward() run as Python every step.
"""

from __future__ import annotations

import time

from _common import PROMPTS, engine_kwargs, in_process_engine, kv_cache_report, parser


def main() -> int:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--prompt", action="append", help="a prompt (repeatable; default: four short prompts)")
    args = p.parse_args()
    in_process_engine()
    from vllm import LLM, SamplingParams  # imported here: --help works without vLLM

    llm = LLM(**engine_kwargs(args))
    print(kv_cache_report(llm))
    params = SamplingParams(temperature=0.0, max_tokens=args.max_tokens)
    start = time.perf_counter()
    outputs = llm.generate(args.prompt or PROMPTS, params)
    elapsed = time.perf_counter() - start
    for out in outputs:
        print(f"{out.prompt!r} -> {out.outputs[0].text!r}")
    tokens = sum(len(o.outputs[0].token_ids) for o in outputs)
    print(f"{len(outputs)} prompts, {tokens} tokens in {elapsed:.2f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
