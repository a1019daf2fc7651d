"""Build the dispatch table: time every candidate config against cuBLAS per shape and M bucket.

    python -m custom_kernels.tune --model llama-3-8b --tp 1 --dtype bfloat16
    python -m custom_kernels.tune --tp 2          # every shipped config's TP=2 shapes (one rank's GEMMs)
    python -m custom_kernels.tune --tp 4,8 --model llama-3-70b
    python -m custom_kernels.tune --merge A.json B.json [--table T]   # tunes run side by side, one per GPU

Tensor parallelism: ``--tp N`` tunes the GEMMs one rank runs at TP=N (models.py splits them as vLLM does), on
one GPU: a rank's GEMM does not involve the other ranks (the all-reduce / all-gather around it is NCCL's).
A list (``--tp 1,2,4,8``) tunes each size; the shapes merge into one table, keyed by shape. Without
``--model``, the shipped configs that vLLM can't split TP ways are left out of that size (and say so).

For each linear shape of the model(s) (models.py) and each M bucket, cuBLAS (F.linear) and every
config of every candidate are checked for correctness, then timed in the same process with the
same method (bench/timing.py). A candidate wins a bucket only if it beats cuBLAS by ``margin``
(default 3%, above the run-to-run spread), else the bucket says cuBLAS. The best Triton config is
stored too (``best_triton``), so the benchmark can report the Triton kernels' own ratio.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import platform
import sys
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from .dispatch import (
    BUCKETS,
    DTYPE_NAMES,
    gpu_name,
    read_table,
    shape_key,
    table_path,
    tuned_bucket,
    write_table,
)
from .gemm.candidates import CANDIDATES
from .gemm.reference import check_close, make_operands, reference_and_error
from .models import available_models, config_name, linear_shapes, load_config, model_dims, resolve_config

DEFAULT_KERNELS = ("triton_splitk", "triton_tma", "cublaslt")
DTYPES = {v: k for k, v in DTYPE_NAMES.items() if k != torch.float32}


@dataclass
class Measured:
    """One timed (kernel, config) for one problem."""

    kernel: str
    config: dict[str, Any] | None
    us: float
    p20_us: float
    p80_us: float


def operand_copies(m: int, n: int, k: int, dtype: torch.dtype, bias: bool,
                   device: torch.device) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]]:
    """Distinct operand sets so that one pass over them streams >= 3x L2 from HBM."""
    from .bench.timing import copies_needed

    per_call = (m * k + n * k + m * n + (n if bias else 0)) * torch.empty((), dtype=dtype).element_size()
    return [make_operands(m, n, k, dtype, device, bias, seed=i) for i in range(copies_needed(per_call, device))]


def time_kernel(launch: Callable, copies, config, reps: int):
    """Median/p20/p80 of one (launcher, config) over the rotating copies."""
    from .bench.timing import time_calls

    calls = [(lambda x=x, w=w, b=b: launch(x, w, b, config)) for x, w, b in copies]
    return time_calls(calls, reps=reps)


def candidate_configs(name: str, m: int, n: int, k: int, x, w, bias, num_sms: int) -> list[dict]:
    if name == "cublaslt":
        from .cuda.cublaslt import num_algos

        return [{"algo": i} for i in range(min(4, num_algos(x, w, bias is not None)))]
    return CANDIDATES[name].space(m, n, k, num_sms)


def tune_problem(n: int, k: int, bias: bool, m: int, dtype: torch.dtype, kernels: Iterable[str], reps: int,
                 log: Callable[[str], None]) -> tuple[Measured, list[Measured]]:
    """cuBLAS and every correct candidate config for one (N, K, M), fastest first."""
    device = torch.device("cuda", torch.cuda.current_device())
    num_sms = torch.cuda.get_device_properties(device).multi_processor_count
    copies = operand_copies(m, n, k, dtype, bias, device)
    x, w, b = copies[0]
    ref = reference_and_error(x, w, b)
    t = time_kernel(CANDIDATES["cublas"].launch, copies, None, reps)
    cublas = Measured("cublas", None, t.median_us, t.p20_us, t.p80_us)
    results: list[Measured] = []
    for name in kernels:
        try:
            configs = candidate_configs(name, m, n, k, x, w, b, num_sms)
        except Exception as err:  # e.g. the CUDA extension can't build here
            log(f"  skip {name}: {type(err).__name__}: {str(err).splitlines()[0][:160]}")
            continue
        for cfg in configs:
            try:
                out = CANDIDATES[name].launch(x, w, b, cfg)
                check = check_close(out, x, w, b, ref=ref)
                if not check.ok:
                    log(f"  WRONG {name} {cfg}: err {check.max_err:.3g} > {check.bound:.3g}")
                    continue
                t = time_kernel(CANDIDATES[name].launch, copies, cfg, reps)
            except Exception as err:  # a config that doesn't compile (shared memory, WS) is skipped
                log(f"  fail {name} {cfg}: {type(err).__name__}: {str(err).splitlines()[0][:160] if str(err) else ''}")
                continue
            results.append(Measured(name, cfg, t.median_us, t.p20_us, t.p80_us))
    del copies
    results.sort(key=lambda r: r.us)
    return cublas, results


def make_entry(cublas: Measured, results: list[Measured], margin: float) -> dict[str, Any]:
    """The table entry: the winner (cuBLAS unless beaten by ``margin``) and the best Triton config."""
    best = results[0] if results else None
    winner = best if best is not None and cublas.us / best.us >= margin else cublas
    entry: dict[str, Any] = {"kernel": winner.kernel, "config": winner.config, "us": round(winner.us, 3),
                             "cublas_us": round(cublas.us, 3), "speedup": round(cublas.us / winner.us, 4)}
    triton = [r for r in results if CANDIDATES[r.kernel].triton]
    if triton:
        entry["best_triton"] = {"kernel": triton[0].kernel, "config": triton[0].config, "us": round(triton[0].us, 3),
                                "ratio": round(cublas.us / triton[0].us, 4)}
    lt = [r for r in results if r.kernel == "cublaslt"]
    if lt:
        entry["best_cublaslt"] = {"config": lt[0].config, "us": round(lt[0].us, 3),
                                  "ratio": round(cublas.us / lt[0].us, 4)}
    return entry


def environment() -> dict[str, Any]:
    """GPU and versions recorded with every table and result.

    Where it records what the workbench's environment capture records (workbench/guest/bench_env.py:
    ``basics`` and ``torch_info``), the names and nesting are the same, so one reader serves the bench
    sessions' env.json and these files; this package imports nothing of the workbench, hence its own capture."""
    import triton

    device = torch.cuda.current_device()
    props = torch.cuda.get_device_properties(device)
    return {"time_utc": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "host": platform.node(), "python": platform.python_version(), "platform": platform.platform(),
            "torch": {"version": torch.__version__, "cuda": torch.version.cuda, "cuda_available": True,
                      "device": gpu_name(torch.device("cuda", device)), "capability": f"{props.major}.{props.minor}",
                      "triton": triton.__version__},
            "sms": props.multi_processor_count}


def tune(models: Iterable[str], dtype: str = "bfloat16", tp: int = 1, buckets: Iterable[int] = BUCKETS,
         kernels: Iterable[str] = DEFAULT_KERNELS, margin: float = 1.03, reps: int = 9,
         log: Callable[[str], None] = print,
         on_shape: Callable[[dict[str, dict[str, Any]]], None] | None = None,
         ) -> tuple[dict[str, dict[str, Any]], list[dict[str, Any]]]:
    """Tune every distinct shape of ``models``; returns (table shapes, raw measurements).

    ``on_shape(table_so_far)`` runs after each shape, so a caller can save partial progress.
    """
    torch_dtype = DTYPES[dtype]
    kernels = tuple(kernels)
    shapes: dict[tuple[int, int], bool] = {}
    names: dict[tuple[int, int], list[str]] = {}
    for model in models:
        for s in linear_shapes(model, tp=tp):
            shapes[(s.n, s.k)] = shapes.get((s.n, s.k), False) or s.bias
            names.setdefault((s.n, s.k), []).append(f"{s.model}.{s.layer}")
    table: dict[str, dict[str, Any]] = {}
    raw: list[dict[str, Any]] = []
    buckets = tuple(buckets)
    total, done = len(shapes) * len(buckets), 0
    for (n, k), bias in shapes.items():
        per_bucket = table.setdefault(shape_key(n, k), {})
        for m in buckets:
            done += 1
            cublas, results = tune_problem(n, k, bias, m, torch_dtype, kernels, reps, log)
            entry = per_bucket[str(m)] = make_entry(cublas, results, margin)
            raw.append({"n": n, "k": k, "m": m, "bias": bias, "layers": names[(n, k)], "cublas": asdict(cublas),
                        "results": [asdict(r) for r in results]})
            bt = entry.get("best_triton", {})
            # "[k/N]" first, as ninja counts: the workbench's tune task draws its progress bar from it.
            log(f"[{done}/{total}] {n:>7}x{k:<6} M={m:<5} cublas {cublas.us:9.2f} us | best {entry['kernel']:<14} "
                f"{entry['us']:9.2f} us ({entry['speedup']:.3f}x) | triton {bt.get('ratio', 0):.3f}x")
            torch.cuda.empty_cache()
        if on_shape is not None:
            on_shape(table)
    return table, raw


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m custom_kernels.tune", description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", help=f"model config (name or path; repeatable); default all of "
                        f"{available_models()}")
    parser.add_argument("--tp", default="1", help="tensor-parallel size(s) the shapes are split for, e.g. 2 or 1,2,4,8")
    parser.add_argument("--dtype", default="bfloat16", choices=sorted(DTYPES), help="GEMM dtype")
    parser.add_argument("--buckets", default=",".join(map(str, BUCKETS)), help="comma-separated M buckets")
    parser.add_argument("--kernels", default=",".join(DEFAULT_KERNELS), help=f"candidates among {list(CANDIDATES)}")
    parser.add_argument("--margin", type=float, default=1.03, help="speedup over cuBLAS a candidate needs to win")
    parser.add_argument("--reps", type=int, default=9, help="timed graph replays per config")
    parser.add_argument("--table", help="table file to merge the results into (default: this GPU's shipped table, "
                        "tables/<gpu slug>.json)")
    parser.add_argument("--raw", help="also write every measurement to this JSON file")
    parser.add_argument("--merge", nargs="+", metavar="TABLE", help="merge these tables' entries into --table "
                        "(default: the shipped table of the one GPU they hold) and stop; needs no GPU")
    parser.add_argument("--confirm", metavar="RESULTS",
                        help="a bench run's JSON (custom_kernels.bench, after the tune): every winner it ran below "
                             "1.00x cuBLAS goes back to cuBLAS in --table (default: the shipped table of its GPU), "
                             "and stop; needs no GPU")
    args = parser.parse_args(argv)
    if args.merge:
        return merge_main(args.merge, args.table)
    if args.confirm:
        return confirm_main(args.confirm, args.table)
    if not torch.cuda.is_available():
        print("error: tune needs a CUDA GPU (run it in the dev container on the GPU host)", file=sys.stderr)
        return 2
    unknown = [k for k in args.kernels.split(",") if k not in CANDIDATES]
    if unknown:
        print(f"error: unknown kernels {unknown}; choose among {list(CANDIDATES)}", file=sys.stderr)
        return 2
    try:
        gpu_bytes = torch.cuda.get_device_properties(torch.cuda.current_device()).total_memory
        plan = tp_plan(args.model, args.tp, gpu_bytes)  # a bad name or TP size fails before any GPU work
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for tp, _, skipped in plan:
        for note in skipped:
            print(f"TP={tp}: skipping {note}")
    env = environment()
    args.table = args.table or str(table_path(env["torch"]["device"]))
    raws = []
    for tp, models, _ in plan:
        meta = {**env, "models": [config_name(resolve_config(m)) for m in models], "tp": tp, "margin": args.margin}

        def save(shapes: dict[str, dict[str, Any]], meta: dict[str, Any] = meta) -> Path:  # after every shape
            table = read_table(args.table)
            table.set_entries(env["torch"]["device"], args.dtype, shapes, meta)
            return write_table(table, args.table)

        shapes, raw = tune(models, args.dtype, tp, [int(b) for b in args.buckets.split(",")],
                           args.kernels.split(","), args.margin, args.reps, on_shape=save)
        path = save(shapes)
        raws.append({"tp": tp, "measurements": raw})
        print(f"wrote {path} ({len(shapes)} shapes at TP={tp} for {env['torch']['device']}, {args.dtype})")
    if args.raw:
        Path(args.raw).write_text(json.dumps({"env": env, "runs": raws}, indent=1))
    return 0


def merge_main(sources: list[str], table: str | None) -> int:
    """--merge: the sources' entries and coverage into ``table`` (one line and exit 2 when that can't be done)."""
    try:
        parts = [read_table(p) for p in sources]
        missing = [p for p in sources if not Path(p).is_file()]
        if missing:
            raise ValueError(f"no table at {', '.join(missing)}: pass the files the tunes wrote (--table)")
        gpus = sorted({g for part in parts for g in part.gpus})
        if table is None and len(gpus) != 1:
            raise ValueError(f"the tables hold {len(gpus)} GPUs ({', '.join(gpus)}): name the target with --table")
        target = Path(table) if table else table_path(gpus[0])
        merged = read_table(target)
    except (ValueError, json.JSONDecodeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for part in parts:
        merged.merge(part)
    write_table(merged, target)
    print(f"merged {len(sources)} table(s) into {target}")
    return 0


def confirm(shapes: dict[str, dict[str, Any]], rows: Iterable[dict[str, Any]], floor: float = 1.0) -> list[str]:
    """Send back to cuBLAS every winner a later bench ran slower than ``floor`` times cuBLAS; returns what it dropped.

    The tune picks a winner at a 1.03 margin from one measurement; the bench measures the dispatch again in another
    process. A cuBLASLt algorithm or Triton config that won the tune by 3% and lost in the bench (on the H200: 6 of
    71 points, down to 0.92x at a 2.5 ms lm_head GEMM) is within its own run-to-run spread, and routing it could only
    cost. A dropped entry keeps what it was under ``unconfirmed``, so the next tune can see it.

    A winner the bench confirms keeps the bench's ratio as ``bench_ratio``: the tune picked it as the fastest of
    many noisy timings, so its own speedup runs high (on the H200, routed winners tuned at a geomean 1.093x ran
    1.055x in two later benches); the bench's is an independent measurement, which the prediction prices."""
    dropped = []
    for row in rows:
        if row.get("variant") != "dispatch" or row.get("kernel") in (None, "", "cublas"):
            continue
        ratio = float(row["ratio_vs_cublas"])
        per_shape = shapes.get(shape_key(int(row["n"]), int(row["k"])))
        if not per_shape:
            continue
        bucket = tuned_bucket(per_shape, int(row["m"]))
        entry = per_shape.get(bucket)
        if not entry or entry.get("kernel") != row["kernel"]:  # the table changed since: this row judges nothing
            continue
        if ratio >= floor:
            entry["bench_ratio"] = round(ratio, 4)
            continue
        unconfirmed = {"kernel": entry["kernel"], "config": entry.get("config"),
                       "tune_speedup": entry.get("speedup"), "bench_ratio": round(ratio, 4)}
        per_shape[bucket] = {**{k: v for k, v in entry.items() if k.startswith("best_")}, "kernel": "cublas",
                             "config": None, "us": entry["cublas_us"], "cublas_us": entry["cublas_us"],
                             "speedup": 1.0, "unconfirmed": unconfirmed}
        dropped.append(f"{row.get('layers', '?')} {shape_key(int(row['n']), int(row['k']))} M={row['m']} "
                       f"(bucket {bucket}): {entry['kernel']} {ratio:.3f}x in the bench, "
                       f"tuned at {entry.get('speedup')}x")
    return dropped


def bench_gpu(env: dict[str, Any]) -> str:
    """The GPU a bench result ran on: ``env.torch.device`` (bench.gemm's record), ``env.gpu`` in results written
    before it recorded the torch environment."""
    return env["gpu"] if "gpu" in env else env["torch"]["device"]


def confirm_main(results: str, table: str | None) -> int:
    """--confirm: drop the winners the bench at ``results`` did not confirm (one line and exit 2 on bad input)."""
    try:
        data = json.loads(Path(results).read_text())
        gpu, rows = bench_gpu(data["env"]), data["rows"]
        dtype = {str(r.get("dtype", "bfloat16")) for r in rows} or {"bfloat16"}
        if len(dtype) != 1:
            raise ValueError(f"{results} mixes dtypes {sorted(dtype)}: confirm one bench run at a time")
        target = Path(table) if table else table_path(gpu)
        merged = read_table(target)
        shapes = merged.gpus.get(gpu, {}).get(dtype.pop(), {}).get("shapes")
        if not shapes:
            raise ValueError(f"{target} has no entries for {gpu}: confirm against the table the bench ran with")
    except FileNotFoundError as err:
        print(f"error: no such file {err.filename}: pass a custom_kernels.bench JSON", file=sys.stderr)
        return 2
    except (KeyError, TypeError, json.JSONDecodeError) as err:
        print(f"error: {results} is not a custom_kernels.bench result ({type(err).__name__}: {err})", file=sys.stderr)
        return 2
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    dropped = confirm(shapes, rows)
    write_table(merged, target)
    for line in dropped:
        print(f"  back to cuBLAS: {line}")
    priced = sum(1 for per_shape in shapes.values() for entry in per_shape.values()
                 if isinstance(entry, dict) and entry.get("bench_ratio"))
    print(f"{len(dropped)} winner(s) the bench did not confirm; {priced} winner(s) now priced at a bench's ratio "
          f"(custom_kernels.predict): {target}")
    return 0


def rank_gemm_bytes(model: str, tp: int, dtype_bytes: int = 2) -> int:
    """Bytes of the GEMM weights one rank holds at ``tp`` (every decoder layer's linears and lm_head): a floor
    of what the rank's GPU must hold for vLLM to run the model at that size at all."""
    name, cfg = load_config(model)
    layers = model_dims(cfg, name).num_layers
    return dtype_bytes * sum(s.n * s.k * (1 if s.layer == "lm_head" else layers) for s in linear_shapes(model, tp))


# vLLM's default gpu_memory_utilization: the share of a GPU an engine may use, weights included.
VLLM_MEMORY_SHARE = 0.9


def tp_plan(models: list[str] | None, tp: str, gpu_bytes: int | None = None) -> list[tuple[int, list[str], list[str]]]:
    """(TP size, models to tune at it, "model: why not" for the shipped ones left out) per size of ``tp``
    ("2" or "1,2,4,8"). A model named explicitly that can't be split is an error (ValueError); the shipped
    set, taken by default, leaves out of a size the models vLLM can't split that way (Qwen2.5-0.5B's 14 heads
    refuse TP=4) and, given ``gpu_bytes``, those whose rank weights alone exceed vLLM's default share of such a
    GPU (Llama-3-70B at TP=1): shapes no deployment on this GPU runs are not worth the tuning time."""
    try:
        sizes = [int(t) for t in str(tp).split(",") if t.strip()]
    except ValueError:
        raise ValueError(f"--tp {tp!r} is not a number or a comma-separated list of numbers: "
                         "e.g. 2 or 1,2,4,8") from None
    if not sizes or min(sizes) < 1:
        raise ValueError(f"--tp {tp!r}: give sizes >= 1, e.g. 2 or 1,2,4,8")
    plan = []
    for size in dict.fromkeys(sizes):
        chosen, skipped = [], []
        for model in models or available_models():
            name, cfg = load_config(model)
            problem = model_dims(cfg, name).tp_problem(size)
            if problem and models:
                linear_shapes(model, tp=size)  # raises with the sizes this model accepts
            if problem:
                skipped.append(f"{name}: tensor-parallel size {problem}")
            elif not models and gpu_bytes and rank_gemm_bytes(model, size) > VLLM_MEMORY_SHARE * gpu_bytes:
                skipped.append(f"{name}: one rank's weights ({rank_gemm_bytes(model, size) / 2**30:.1f} GiB) exceed "
                               f"{VLLM_MEMORY_SHARE:.0%} of this GPU's {gpu_bytes / 2**30:.1f} GiB at TP={size}; "
                               "name it with --model to tune it anyway")
            else:
                chosen.append(model)
        plan.append((size, chosen, skipped))
    return plan


if __name__ == "__main__":
    sys.exit(main())
