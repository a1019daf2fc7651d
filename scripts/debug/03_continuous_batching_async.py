#!/usr/bin/env python3
"""Step 3: continuous batching with AsyncLLM - requests arrive while others are decoding, join the running
batch at the next step and leave when done; the timeline shows each request's first and last token.

AsyncLLM always runs the engine core in a child process (EngineCoreClient.make_client: asyncio without
multiprocessing is not supported in 0.13.0), so VLLM_ENABLE_V1_MULTIPROCESSING=0 does not apply here and the
debug configuration sets "subProcess": true. Breakpoints: vllm/v1/core/sched/scheduler.py Scheduler.schedule
(who runs this step, in the child), vllm/v1/engine/async_llm.py AsyncLLM.generate (this process).
"""

from __future__ import annotations

import asyncio
import time

from _common import PROMPTS, engine_kwargs, parser


async def one_request(engine, index: int, prompt: str, delay_s: float, max_tokens: int, t0: float) -> dict:
    from vllm import SamplingParams

    await asyncio.sleep(delay_s)
    arrived = time.perf_counter() - t0
    first = last = None
    n = 0
    params = SamplingParams(temperature=0.0, max_tokens=max_tokens)
    async for out in engine.generate(prompt, params, request_id=f"req-{index}"):
        now = time.perf_counter() - t0
        first = first if first is not None else now
        last, n = now, len(out.outputs[0].token_ids)
    return {"id": index, "arrived_s": arrived, "first_token_s": first, "done_s": last, "tokens": n}


async def run(args) -> None:
    from vllm.engine.arg_utils import AsyncEngineArgs
    from vllm.v1.engine.async_llm import AsyncLLM

    engine = AsyncLLM.from_engine_args(AsyncEngineArgs(**engine_kwargs(args, max_num_seqs=args.max_num_seqs)))
    try:
        t0 = time.perf_counter()
        jobs = [one_request(engine, i, PROMPTS[i % len(PROMPTS)], i * args.stagger_s,
                            args.max_tokens * (1 + i % 3), t0) for i in range(args.requests)]
        rows = await asyncio.gather(*jobs)
    finally:
        engine.shutdown()
    print(f"{'req':>4} {'arrived':>8} {'first tok':>10} {'done':>8} {'tokens':>7}")
    for r in rows:
        print(f"{r['id']:>4} {r['arrived_s']:>8.2f} {r['first_token_s']:>10.2f} {r['done_s']:>8.2f} {r['tokens']:>7}")
    overlap = sum(1 for a in rows for b in rows if a is not b and a["arrived_s"] < b["done_s"] < a["done_s"])
    print(f"requests finishing while another was still running: {overlap} (continuous batching)")


def main() -> int:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--requests", type=int, default=8, help="number of requests")
    p.add_argument("--stagger-s", type=float, default=0.05, help="seconds between arrivals")
    p.add_argument("--max-num-seqs", type=int, default=4, help="batch limit (smaller: requests must wait)")
    args = p.parse_args()
    asyncio.run(run(args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
