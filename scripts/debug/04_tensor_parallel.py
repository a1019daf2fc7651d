#!/usr/bin/env python3
"""Step 4: tensor parallelism (TP=2): each GPU holds half the attention heads and half of every MLP, and
NCCL all-reduces after the row-parallel layers. Needs 2 GPUs.

With TP>1 the model runs in worker processes (vllm/v1/executor/multiproc_executor.py), even with
VLLM_ENABLE_V1_MULTIPROCESSING=0: the debug configuration sets "subProcess": true so breakpoints in
vllm/model_executor/layers/linear.py (RowParallelLinear.forward) hit in the workers.
"""

from __future__ import annotations

import sys

from _common import PROMPTS, engine_kwargs, in_process_engine, kv_cache_report, parser


def main() -> int:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--tp", type=int, default=2, help="tensor parallel size")
    args = p.parse_args()
    in_process_engine()
    import torch

    if torch.cuda.device_count() < args.tp:
        print(f"error: --tp {args.tp} needs {args.tp} GPUs, {torch.cuda.device_count()} visible: "
              "set CUDA_VISIBLE_DEVICES=0,1 on a host with two GPUs (invoke up --gpus 0,1)", file=sys.stderr)
        return 1
    from vllm import LLM, SamplingParams

    llm = LLM(**engine_kwargs(args, tensor_parallel_size=args.tp))
    print(kv_cache_report(llm))
    for out in llm.generate(PROMPTS, SamplingParams(temperature=0.0, max_tokens=args.max_tokens)):
        print(f"{out.prompt!r} -> {out.outputs[0].text!r}")
    print(f"TP={args.tp}: KV heads per GPU = num_key_value_heads / {args.tp} (invoke plan-memory --tp {args.tp})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
