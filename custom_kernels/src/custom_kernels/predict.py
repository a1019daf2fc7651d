"""What the dispatch table predicts a vLLM run gains: the GEMM time the tuned winners save, per generate.

For one ``generate`` as ``vllm bench latency`` or ``throughput`` times it (batch of prompts, input and output
lengths), count the GEMMs vLLM runs — every decoder layer's linears at each step's M (prefill: the prompt
tokens in chunks of ``--max-num-batched-tokens``; decode: one token per running sequence) and lm_head at one
row per sequence — and price each with the table's own timings for this GPU and dtype at the tuned bucket that
serves that M: cuBLAS's time, and the winner's time where the layer routes (the vLLM plugin's rule: a shape
routes when some bucket has a non-cuBLAS winner; lm_head is not a LinearBase layer and never routes there).
A winner a later bench confirmed (``tune --confirm``) is priced at the bench's ratio to cuBLAS, the others at
the tune's timing, which runs high; ``winners_priced_by`` counts each.

Tensor parallelism (``--tp``): every rank runs its shard's GEMMs at the same M at the same time, so one
rank's GEMM time is the step's; the shapes are the rank's (models.py), priced from the table's entries for
those shapes (tune them with ``--tp``), and the all-reduce/all-gather around them is not priced (it is the
same in both arms). A TP-split shape the table lacks is listed in ``untimed_shapes``.

The prediction is an upper bound on what the kernels can give: it assumes the table's standalone timings hold
inside the engine. The op's own cost is counted apart: inside CUDA graphs it is none (a replay runs no Python),
but every step vLLM runs outside one (more tokens than its largest captured size: prefill) calls the op's Python
body once per routed layer. ``routed_calls_outside_graphs`` counts those calls per generate; with ``--host-us``
(the op's measured host time per call over F.linear, bench.op_overhead --host) ``host_s`` prices them: what the
route can cost where the host, not the GPU, is the step's critical path. Put beside the measured A/B it says
whether a result is the kernels' (it moved by about what they save) or something else's.

usage: python -m custom_kernels.predict --model CONFIG --gpu NAME [--dtype bfloat16] --mode latency|throughput
           [--batch-size 8] [--num-prompts 200] --input-len N --output-len N [--tp 1] [--host-us US] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .dispatch import DispatchTable, read_table, shape_key, table_path, tuned_bucket
from .models import ModelDims, linear_shapes, load_config, model_dims

MAX_BATCHED_TOKENS = 8192  # vLLM V1's default token budget per step for the offline LLM
MAX_SEQS = 256  # vLLM's default max_num_seqs: at most this many sequences decode in one step
# vLLM's largest CUDA-graph size by default (min(2 * max_num_seqs, 512), vllm/config/vllm.py): a step with more
# tokens runs its compiled graph without a CUDA graph, so the op's Python body runs once per routed layer.
CUDA_GRAPH_MAX_TOKENS = 512


def steps(mode: str, batch_size: int, num_prompts: int, input_len: int, output_len: int) -> list[tuple[int, int]]:
    """(M tokens of the step, sequences of the step) for every engine step of one generate."""
    seqs = batch_size if mode == "latency" else num_prompts
    out: list[tuple[int, int]] = []
    for start in range(0, seqs, MAX_SEQS):  # throughput: waves of at most MAX_SEQS sequences
        wave = min(MAX_SEQS, seqs - start)
        prompt_tokens = wave * input_len
        chunks = math.ceil(prompt_tokens / MAX_BATCHED_TOKENS)
        for c in range(chunks):
            tokens = min(MAX_BATCHED_TOKENS, prompt_tokens - c * MAX_BATCHED_TOKENS)
            out.append((tokens, wave if c == chunks - 1 else 0))  # logits only once a prompt is complete
        out += [(wave, wave)] * max(0, output_len - 1)
    return out


def _timing(table: DispatchTable, gpu: str, dtype: str, n: int, k: int, m: int) -> tuple[str, dict[str, Any] | None]:
    """(the tuned bucket that serves M, its entry), or ("", None) where the table has no entries for the shape."""
    per_shape = table.gpus.get(gpu, {}).get(dtype, {}).get("shapes", {}).get(shape_key(n, k))
    if not per_shape:
        return "", None
    bucket = tuned_bucket(per_shape, m)
    return bucket, per_shape.get(bucket)


def winner_us(entry: dict[str, Any]) -> float:
    """A routed winner's time: cuBLAS's over the ratio a later bench confirmed (tune --confirm's
    ``bench_ratio``), else the tune's own timing, which the pick of the fastest of many biases low."""
    if entry.get("bench_ratio"):
        return float(entry["cublas_us"]) / float(entry["bench_ratio"])
    return float(entry.get("us", entry["cublas_us"]))


def predict(dims: ModelDims, table: DispatchTable, gpu: str, dtype: str, mode: str, batch_size: int,
            num_prompts: int, input_len: int, output_len: int, tp: int = 1,
            host_us: float | None = None) -> dict[str, Any]:
    """Seconds of GEMM per generate with cuBLAS everywhere and with the routed winners, per shape; the routed
    calls made outside CUDA graphs, and what they cost the host at ``host_us`` each."""
    shapes = linear_shapes(dims, tp)
    plan = steps(mode, batch_size, num_prompts, input_len, output_len)
    rows: dict[str, dict[str, Any]] = {}
    untimed: set[str] = set()
    priced: dict[tuple[str, str], str] = {}  # (shape, bucket) of every winner the generate runs -> timed by
    for s in shapes:
        lm_head = s.layer == "lm_head"
        count = 1 if lm_head else dims.num_layers
        routes = not lm_head and table.routes_any(gpu, dtype, s.n, s.k)
        row = rows.setdefault(s.layer, {"shape": shape_key(s.n, s.k), "routes": routes, "cublas_s": 0.0,
                                        "custom_s": 0.0})
        for tokens, seqs in plan:
            m = seqs if lm_head else tokens
            if m == 0:
                continue
            bucket, entry = _timing(table, gpu, dtype, s.n, s.k, m)
            if entry is None or "cublas_us" not in entry:
                untimed.add(shape_key(s.n, s.k))
                continue
            base = float(entry["cublas_us"]) * 1e-6 * count
            won = routes and entry.get("kernel", "cublas") != "cublas"
            row["cublas_s"] += base
            row["custom_s"] += winner_us(entry) * 1e-6 * count if won else base
            if won:
                priced[shape_key(s.n, s.k), bucket] = "bench" if entry.get("bench_ratio") else "tune"
    cublas = sum(r["cublas_s"] for r in rows.values())
    custom = sum(r["custom_s"] for r in rows.values())
    routed_layers = sum(dims.num_layers for r in rows.values() if r["routes"])
    eager_steps = sum(1 for tokens, _ in plan if tokens > CUDA_GRAPH_MAX_TOKENS)
    calls = routed_layers * eager_steps
    return {"model": dims.name, "gpu": gpu, "dtype": dtype, "mode": mode, "tp": tp, "steps": len(plan),
            "gemm_s_cublas": cublas, "gemm_s_custom": custom, "saved_s": cublas - custom,
            "routed_calls_outside_graphs": calls, "host_us_per_call": host_us,
            "host_s": calls * host_us * 1e-6 if host_us is not None else None,
            "winners_priced_by": {src: sum(1 for v in priced.values() if v == src) for src in ("bench", "tune")},
            "shapes": rows, "untimed_shapes": sorted(untimed)}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="a shipped config name or a config.json")
    parser.add_argument("--gpu", required=True, help="the table's GPU key, e.g. 'NVIDIA H200'")
    parser.add_argument("--dtype", help="default: the config's torch_dtype (vLLM's dtype=auto), else bfloat16")
    parser.add_argument("--mode", choices=("latency", "throughput"), required=True)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--num-prompts", type=int, default=200)
    parser.add_argument("--input-len", type=int, required=True)
    parser.add_argument("--output-len", type=int, required=True)
    parser.add_argument("--tp", type=int, default=1)
    parser.add_argument("--host-us", type=float, help="the op's host time per call over F.linear (bench.op_overhead "
                        "--host: op_over_F.linear_us); prices the routed calls made outside CUDA graphs")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    try:
        name, cfg = load_config(args.model)
        dtype = args.dtype or str(cfg.get("torch_dtype") or cfg.get("dtype") or "bfloat16")
        table = read_table(table_path(args.gpu))
        result = predict(model_dims(cfg, name), table, args.gpu, dtype, args.mode, args.batch_size,
                         args.num_prompts, args.input_len, args.output_len, args.tp, args.host_us)
    except (FileNotFoundError, ValueError) as err:  # a bad name or a TP size vLLM can't split the model into
        print(f"error: {err}", file=sys.stderr)
        return 2
    text = json.dumps(result, indent=1)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
