"""GEMM microbenchmark: the dispatch path, the best Triton kernel and cuBLASLt vs cuBLAS, same run.

    python -m custom_kernels.bench.gemm --model llama-3-8b --model qwen2.5-0.5b [--m 1,16,...] [--plot]

Shapes come from the model configs (models.py), M from 1 to 8192. Every variant is checked
against the fp32 reference (reference.py, shared with the tests) before it is timed; a wrong
variant is reported invalid, never timed. Timing: CUDA-graph replays over rotating operand
copies (> 3x L2: every call reads from HBM), two alternating rounds per variant; median, p20 and
p80 per call. Results (CSV + JSON with the GPU, versions and measured peaks) go to
``<out>/<gpu>/gemm_<dtype>.{csv,json,png}``.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import statistics
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..dispatch import BUCKETS, active_table, bucket_for, gpu_name, gpu_slug
from ..gemm.candidates import CANDIDATES, DECODE_MAX_M
from ..gemm.reference import check_close, reference_and_error
from ..models import available_models, linear_shapes
from ..tune import DTYPES, environment, operand_copies, tp_plan
from .timing import Timing, time_calls

DEFAULT_OUT = Path(__file__).resolve().parents[3] / "bench" / "results"  # the project's bench/results
VARIANTS = ("cublas", "dispatch", "triton", "cublaslt")


@dataclass
class Row:
    """One (shape, M, variant) measurement; times per call in microseconds."""

    layers: str
    n: int
    k: int
    m: int
    bias: bool
    variant: str
    kernel: str
    config: str
    valid: bool
    max_err: float
    median_us: float = math.nan
    p20_us: float = math.nan
    p80_us: float = math.nan
    tflops: float = math.nan
    gbps: float = math.nan
    pct_roofline: float = math.nan
    ratio_vs_cublas: float = math.nan
    kernels_seen: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def measure_peaks() -> dict[str, float]:
    """Measured ceilings: device-to-device copy GB/s (read + write) and 8192^3 bf16 matmul TFLOP/s."""
    src = torch.empty(1 << 30, dtype=torch.uint8, device="cuda")
    dst = torch.empty_like(src)
    t = time_calls([lambda: dst.copy_(src)], reps=10, use_graph=False)
    a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    tm = time_calls([lambda: torch.nn.functional.linear(a, b)], reps=10, use_graph=False)
    return {"copy_gbps": 2 * (1 << 30) / (t.median_us * 1e3), "matmul_tflops": 2 * 8192**3 / (tm.median_us * 1e6)}


def variant_choice(variant: str, n: int, k: int, m: int, dtype: str) -> tuple[str, dict | None] | None:
    """(kernel, config) a forced variant runs, from the table's best entries (heuristic if untuned)."""
    entry = active_table().entry(gpu_name(torch.device("cuda", torch.cuda.current_device())), dtype, n, k,
                                 bucket_for(m))
    if variant == "triton":
        if entry and "best_triton" in entry:
            return entry["best_triton"]["kernel"], entry["best_triton"]["config"]
        return ("triton_splitk" if m <= DECODE_MAX_M else "triton_tma"), None
    if variant == "cublaslt":
        from ..cuda.cublaslt import unavailable_reason

        if unavailable_reason():
            return None
        return "cublaslt", (entry or {}).get("best_cublaslt", {}).get("config", {"algo": 0})
    return None


def bench_problem(layers: str, n: int, k: int, bias: bool, m: int, dtype: torch.dtype, reps: int,
                  peaks: dict[str, float]) -> list[Row]:
    """All variants for one (N, K, M): correctness first, then alternating timing rounds."""
    dname = next(k_ for k_, v in DTYPES.items() if v == dtype)
    copies = operand_copies(m, n, k, dtype, bias, torch.device("cuda", torch.cuda.current_device()))
    x, w, b = copies[0]
    ref = reference_and_error(x, w, b)
    launches: dict[str, tuple[str, Any, Any]] = {}
    rows: dict[str, Row] = {}
    for variant in VARIANTS:
        if variant == "cublas":
            kernel, cfg, fn = "cublas", None, CANDIDATES["cublas"].launch
        elif variant == "dispatch":
            from ..op import select_kernel

            choice = select_kernel(x, w, b)
            kernel, cfg = choice.kernel, choice.config
            fn = lambda x_, w_, b_, c_: torch.ops.custom_kernels.linear(x_, w_, b_, "bench")  # noqa: E731
        else:
            picked = variant_choice(variant, n, k, m, dname)
            if picked is None:
                continue
            kernel, cfg = picked
            fn = CANDIDATES[kernel].launch
        try:
            check = check_close(fn(x, w, b, cfg), x, w, b, ref=ref)
        except Exception as err:
            print(f"  {variant} failed: {type(err).__name__}: {err}", file=sys.stderr)
            continue
        row = Row(layers, n, k, m, bias, variant, kernel, json.dumps(cfg, sort_keys=True) if cfg else "",
                  check.ok, check.max_err, extra={"bound": check.bound, "torch_err": check.torch_err})
        rows[variant] = row
        if check.ok:
            launches[variant] = (fn, cfg, row)
    samples: dict[str, list[Timing]] = {v: [] for v in launches}
    for _round in range(2):  # alternate the variants (A B C D A B C D): drift hits all alike
        order = list(launches) if _round == 0 else list(reversed(launches))
        for variant in order:
            fn, cfg, _ = launches[variant]
            calls = [(lambda x=x_, w=w_, b=b_, fn=fn, cfg=cfg: fn(x, w, b, cfg)) for x_, w_, b_ in copies]
            samples[variant].append(time_calls(calls, reps=max(3, reps // 2)))
    flops = 2.0 * m * n * k
    nbytes = (m * k + n * k + m * n + (n if bias else 0)) * x.element_size()
    floor_us = max(flops / (peaks["matmul_tflops"] * 1e6), nbytes / (peaks["copy_gbps"] * 1e3))
    for variant, timings in samples.items():
        row = rows[variant]
        med = statistics.median(t.median_us for t in timings)  # of the rounds' medians
        row.median_us = med
        row.p20_us = min(t.p20_us for t in timings)
        row.p80_us = max(t.p80_us for t in timings)
        row.tflops = flops / (med * 1e6)
        row.gbps = nbytes / (med * 1e3)
        row.pct_roofline = 100.0 * floor_us / med
    base = rows.get("cublas")
    for row in rows.values():
        if base is not None and row.valid and base.valid:
            row.ratio_vs_cublas = base.median_us / row.median_us
    del copies
    torch.cuda.empty_cache()
    return list(rows.values())


def verify_dispatch_kernels(rows: list[Row], dtype: torch.dtype) -> int:
    """After all timing (the profiler stays out of the timed runs): confirm, from a profiler trace,
    that the dispatch path really launched the Triton kernel the table chose. Returns mismatches."""
    from ..gemm.reference import make_operands
    from ..profiling import custom_kernels_in, kernel_counts

    bad = 0
    for row in rows:
        if row.variant != "dispatch" or not CANDIDATES[row.kernel].triton:
            continue
        x, w, b = make_operands(row.m, row.n, row.k, dtype, "cuda", row.bias)
        seen = custom_kernels_in(kernel_counts(lambda x=x, w=w, b=b: torch.ops.custom_kernels.linear(x, w, b, "v")))
        row.kernels_seen = ",".join(sorted(seen))
        if row.kernel not in seen:
            row.valid = False
            bad += 1
            print(f"  dispatch for {row.n}x{row.k} M={row.m} chose {row.kernel} but the trace shows {seen}",
                  file=sys.stderr)
    return bad


def geomean(values: list[float]) -> float:
    values = [v for v in values if v == v and v > 0]
    return math.exp(sum(map(math.log, values)) / len(values)) if values else math.nan


def summarize(rows: list[Row], peaks: dict[str, float]) -> dict[str, Any]:
    """The goal figures: dispatch min/geomeans per M class, Triton decode/prefill geomeans, decode %BW."""
    def pick(variant, lo, hi):
        return [r.ratio_vs_cublas for r in rows if r.variant == variant and lo <= r.m <= hi]

    big_decode = [r for r in rows if r.variant == "dispatch" and r.m == 1 and r.n * r.k * 2 >= (64 << 20)]
    return {
        "dispatch_min_ratio": min((r.ratio_vs_cublas for r in rows if r.variant == "dispatch"), default=math.nan),
        "dispatch_geomean_decode_m_le_64": geomean(pick("dispatch", 1, 64)),
        "dispatch_geomean_mid_128_512": geomean(pick("dispatch", 128, 512)),
        "dispatch_geomean_prefill_m_ge_1024": geomean(pick("dispatch", 1024, 1 << 30)),
        "triton_geomean_decode_m_le_64": geomean(pick("triton", 1, 64)),
        "triton_geomean_prefill_m_ge_1024": geomean(pick("triton", 1024, 1 << 30)),
        "cublaslt_geomean_all": geomean(pick("cublaslt", 1, 1 << 30)),
        "invalid_rows": sum(not r.valid for r in rows),
        "large_decode_weights_pct_copy_bw": {f"{r.n}x{r.k}": round(100 * r.gbps / peaks["copy_gbps"], 1)
                                             for r in big_decode},
    }


def write_results(rows: list[Row], env: dict[str, Any], summary: dict[str, Any], out_dir: Path,
                  dtype: str) -> dict[str, Path]:
    """CSV (one row per measurement) and JSON (env + summary + rows), under out_dir/<gpu>/."""
    folder = out_dir / gpu_slug(env["torch"]["device"])
    folder.mkdir(parents=True, exist_ok=True)
    paths = {"csv": folder / f"gemm_{dtype}.csv", "json": folder / f"gemm_{dtype}.json"}
    fields = [f for f in Row.__dataclass_fields__ if f != "extra"]
    with paths["csv"].open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields)
        writer.writeheader()
        for r in rows:
            writer.writerow({f: getattr(r, f) for f in fields})
    paths["json"].write_text(json.dumps({"env": env, "summary": summary, "rows": [asdict(r) for r in rows]},
                                        indent=1, default=str))
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m custom_kernels.bench.gemm", description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append",
                        help=f"model config (repeatable); default all of {available_models()}")
    parser.add_argument("--tp", type=int, default=1, help="tensor-parallel size the shapes are split for")
    parser.add_argument("--dtype", default="bfloat16", choices=sorted(DTYPES), help="GEMM dtype")
    parser.add_argument("--m", default=",".join(map(str, BUCKETS)), help="comma-separated M values (tokens)")
    parser.add_argument("--reps", type=int, default=20, help="timed graph replays per variant (split in 2 rounds)")
    parser.add_argument("--out", default=str(DEFAULT_OUT), help="results folder (a <gpu> subfolder is made)")
    parser.add_argument("--plot", action="store_true", help="also draw TFLOP/s and ratio vs M per shape (PNG)")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("error: the GEMM benchmark needs a CUDA GPU (run it in the dev container on the GPU host)",
              file=sys.stderr)
        return 2
    try:
        # The shipped set (no --model): those vLLM can split --tp ways and whose rank fits this GPU (tune's rule).
        gpu_bytes = torch.cuda.get_device_properties(torch.cuda.current_device()).total_memory
        ((_, models, skipped),) = tp_plan(args.model, str(args.tp), gpu_bytes)
        for note in skipped:
            print(f"TP={args.tp}: skipping {note}")
        shapes: dict[tuple[int, int], list] = {}
        for model in models:
            for s in linear_shapes(model, tp=args.tp):
                shapes.setdefault((s.n, s.k), []).append(s)
        ms = [int(v) for v in args.m.split(",")]
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    dtype = DTYPES[args.dtype]
    env = {**environment(), "models": models, "tp": args.tp}
    peaks = measure_peaks()
    env["peaks"] = peaks
    print(f"{env['torch']['device']}: copy {peaks['copy_gbps']:.0f} GB/s, "
          f"bf16 matmul {peaks['matmul_tflops']:.0f} TFLOP/s")
    rows: list[Row] = []
    for (n, k), group in shapes.items():
        layers = ",".join(f"{s.model}.{s.layer}" for s in group)
        bias = any(s.bias for s in group)
        for m in ms:
            got = bench_problem(layers, n, k, bias, m, dtype, args.reps, peaks)
            rows += got
            line = " ".join(f"{r.variant}={r.ratio_vs_cublas:.3f}x" + ("" if r.valid else "(INVALID)")
                            for r in got if r.variant != "cublas")
            cub = next((r for r in got if r.variant == "cublas"), None)
            print(f"{n:>7}x{k:<6} M={m:<5} cublas {cub.median_us if cub else math.nan:9.2f} us "
                  f"{cub.tflops if cub else math.nan:7.1f} TFLOP/s | {line}", flush=True)
        write_results(rows, env, summarize(rows, peaks), Path(args.out), args.dtype)  # partial results survive
    mismatches = verify_dispatch_kernels(rows, dtype)
    summary = summarize(rows, peaks)
    summary["dispatch_kernel_mismatches"] = mismatches
    paths = write_results(rows, env, summary, Path(args.out), args.dtype)
    if args.plot:
        from .plot import plot_results

        paths["png"] = plot_results(paths["json"])
    print(json.dumps(summary, indent=1))
    for kind, path in paths.items():
        print(f"wrote {kind}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
