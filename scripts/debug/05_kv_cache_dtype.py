#!/usr/bin/env python3
"""Step 5: KV cache dtype - "auto" (the model dtype) against fp8: fp8 halves the bytes per token, so the
same memory holds twice the tokens; the outputs show what it costs in accuracy on this model.

Each dtype runs in a fresh child process. Breakpoints: vllm/attention/layer.py Attention.__init__
(kv_cache_dtype), vllm/v1/kv_cache_interface.py AttentionSpec.page_size_bytes.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

from _common import PROMPTS, engine_kwargs, in_process_engine, kv_cache_report, parser


def run_one(args, kv_cache_dtype: str) -> dict:
    in_process_engine()
    from vllm import LLM, SamplingParams

    llm = LLM(**engine_kwargs(args, kv_cache_dtype=kv_cache_dtype))
    cfg = llm.llm_engine.vllm_config.cache_config
    outs = llm.generate(PROMPTS, SamplingParams(temperature=0.0, max_tokens=args.max_tokens))
    print(f"{kv_cache_dtype}: {kv_cache_report(llm)}", file=sys.stderr)
    return {"kv_cache_dtype": kv_cache_dtype, "num_gpu_blocks": cfg.num_gpu_blocks,
            "texts": [o.outputs[0].text for o in outs]}


def main() -> int:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--dtypes", default="auto,fp8", help="comma-separated kv_cache_dtype values to compare")
    p.add_argument("--one", help=argparse.SUPPRESS)  # internal: one dtype in this process, JSON on stdout
    args = p.parse_args()
    if args.one:
        print("RESULT " + json.dumps(run_one(args, args.one)))
        return 0
    results = []
    for dtype in args.dtypes.split(","):
        proc = subprocess.run([sys.executable, __file__, *sys.argv[1:], "--one", dtype], stdout=subprocess.PIPE,
                              text=True)
        line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
        if proc.returncode or not line:
            print(f"error: kv_cache_dtype={dtype} failed (exit {proc.returncode})", file=sys.stderr)
            return 1
        results.append(json.loads(line[-1][len("RESULT "):]))
    base = results[0]
    for r in results:
        same = sum(a == b for a, b in zip(r["texts"], base["texts"], strict=True))
        print(f"{r['kv_cache_dtype']:>8}: {r['num_gpu_blocks']} blocks; {same}/{len(PROMPTS)} outputs identical to "
              f"{base['kv_cache_dtype']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
