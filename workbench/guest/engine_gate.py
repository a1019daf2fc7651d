#!/usr/bin/env python3
"""One arm of the output gate: a fixed, seeded prompt set through the real vLLM engine, greedy, with the
top logprobs of every generated token, written as JSON. The arm is whatever the environment says
(VLLM_USE_CUSTOM_GEMM=0 or 1): the bench session runs this once per arm and compares the files.

The prompts are token ids drawn with a fixed seed (no tokenizer needed); every request generates exactly
--tokens tokens (ignore_eos). Runs where vLLM runs, with the interpreter that has it.
usage: python engine_gate.py --model DIR --out FILE [--tokenizer DIR] [--prompts 16] [--tokens 32] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time


def prompt_ids(count: int, length: int, vocab: int, seed: int) -> list[list[int]]:
    """The gate's prompts: the same ids for both arms and every session with this seed."""
    rng = random.Random(seed)
    return [[rng.randrange(vocab) for _ in range(length)] for _ in range(count)]


def _position(entry) -> dict[int, float]:
    """{token id: logprob} of one generated position, whatever container this vLLM release uses."""
    items = entry.items() if hasattr(entry, "items") else entry
    return {int(token): float(getattr(lp, "logprob", lp)) for token, lp in items}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="model folder (config, weights) or id")
    parser.add_argument("--tokenizer", help="tokenizer folder (default: the model's)")
    parser.add_argument("--out", required=True, help="JSON file to write")
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--prompt-len", type=int, default=64)
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--top", type=int, default=5, help="logprobs kept per generated token")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tp", type=int, default=1)
    args = parser.parse_args(argv)

    from vllm import LLM, SamplingParams

    with open(os.path.join(args.model, "config.json")) as fh:
        vocab = int(json.load(fh)["vocab_size"])
    prompts = prompt_ids(args.prompts, args.prompt_len, vocab, args.seed)
    start = time.time()
    llm = LLM(model=args.model, tokenizer=args.tokenizer, seed=args.seed, tensor_parallel_size=args.tp,
              max_model_len=args.prompt_len + args.tokens + 16)
    params = SamplingParams(temperature=0.0, max_tokens=args.tokens, ignore_eos=True, logprobs=args.top,
                            detokenize=False)
    outputs = llm.generate([{"prompt_token_ids": p} for p in prompts], params, use_tqdm=False)
    records = []
    for out in outputs:
        completion = out.outputs[0]
        records.append({"tokens": [int(t) for t in completion.token_ids],
                        "logprobs": [{str(t): lp for t, lp in _position(pos).items()}
                                     for pos in (completion.logprobs or [])]})
    result = {"switch": os.environ.get("VLLM_USE_CUSTOM_GEMM", ""), "model": args.model, "vocab_size": vocab,
              "seed": args.seed, "prompt_len": args.prompt_len, "tokens": args.tokens, "top": args.top,
              "seconds": round(time.time() - start, 1), "outputs": records}
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as fh:
        json.dump(result, fh)
    print(f"gate arm (VLLM_USE_CUSTOM_GEMM={result['switch'] or 'unset'}): {len(records)} prompts x "
          f"{args.tokens} tokens in {result['seconds']} s -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
