"""The op inside torch.distributed: column- and row-parallel linears as vLLM runs them around its GEMM, checked
against the whole GEMM on one device with the tolerance rule of gemm/reference.py.

vLLM (model_executor/layers/linear.py) splits a linear over the tensor-parallel ranks two ways:
- column parallel (qkv_proj, gate_up_proj, lm_head): each rank holds N/tp rows of the weight (and of the bias)
  and computes its slice of the output; where the whole output is needed (lm_head's logits) the slices are
  all-gathered along the last dim;
- row parallel (o_proj, down_proj): each rank holds K/tp columns of the weight and the matching slice of the
  input, computes a partial product, and an all-reduce sums the partials; the bias is added by rank 0 only
  (``bias_ = None if self.tp_rank > 0``), so it is counted once.
Every rank's GEMM here goes through ``torch.ops.custom_kernels.linear`` (the dispatch table, or a forced
kernel), so what is checked is the op's result inside the collectives, not F.linear's.

    torchrun --nproc-per-node 2 -m custom_kernels.tensor_parallel --backend nccl
    python -m custom_kernels.tensor_parallel --ranks 2 --backend gloo     # spawns the ranks itself (CPU too)

On the CPU (gloo) the op's CPU path is F.linear, or a forced Triton kernel in Triton's interpreter: what that
tests is the sharding and the reduction arithmetic (which slice, which bias, which sum), with the real op in
every rank; the CUDA kernels themselves inside NCCL need the GPUs (the gpu tier).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from .gemm.reference import check_close, make_operands


@dataclass(frozen=True)
class Case:
    """One whole linear y[M, N] = x[M, K] @ w[N, K].T (+ bias), split ``kind`` ("column" or "row") over the ranks."""

    kind: str
    m: int
    n: int
    k: int
    bias: bool
    dtype: str  # "float32", "bfloat16", "float16"


def model_cases(model: str, tp: int, ms: tuple[int, ...], dtype: str = "bfloat16") -> list[Case]:
    """The whole (unsplit) linears of a model config whose rank shapes at ``tp`` vLLM runs: column parallel
    qkv_proj and gate_up_proj, row parallel o_proj and down_proj (models.py's shapes, times tp back)."""
    from .models import linear_shapes

    cases = []
    for s in linear_shapes(model, tp=tp):
        if s.layer in ("qkv_proj", "gate_up_proj"):
            cases += [Case("column", m, s.n * tp, s.k, s.bias, dtype) for m in ms]
        elif s.layer in ("o_proj", "down_proj"):
            cases += [Case("row", m, s.n, s.k * tp, s.bias, dtype) for m in ms]
    return cases


def shard_linear(case: Case, rank: int, world: int, device: torch.device,
                 kernel: str | None = None) -> dict[str, Any]:
    """This rank's share of one case through the op, the collective, and the check of the whole result (every
    rank builds the same operands from the same seed, as every rank of vLLM loads the same checkpoint)."""
    import custom_kernels as ck

    dtype = getattr(torch, case.dtype)
    x, w, b = make_operands(case.m, case.n, case.k, dtype, device, case.bias, seed=case.m + case.n + case.k)
    if case.kind == "column":
        if case.n % world:
            raise ValueError(f"N={case.n} does not split {world} ways")
        w_r, b_r, x_r = w.chunk(world, 0)[rank], None if b is None else b.chunk(world, 0)[rank], x
    else:
        if case.k % world:
            raise ValueError(f"K={case.k} does not split {world} ways")
        w_r, x_r = w.chunk(world, 1)[rank].contiguous(), x.chunk(world, 1)[rank].contiguous()
        b_r = b if rank == 0 else None  # vLLM's RowParallelLinear: the bias once, on rank 0
    # one counter per case, kernel and rank: which kernel ran for this very GEMM
    layer = f"tp{world}.{case.kind}.{case.m}x{case.n}x{case.k}.{case.dtype}.bias{int(case.bias)}.{kernel}.rank{rank}"

    def op(name, *args):
        if kernel is None:
            return ck.linear(*args, name)
        with ck.force_kernel(kernel):
            return ck.linear(*args, name)

    part = op(layer, x_r, w_r.contiguous(), b_r)
    if case.kind == "column":
        parts = [torch.empty_like(part) for _ in range(world)]
        dist.all_gather(parts, part.contiguous())
        out = torch.cat(parts, -1)
    else:
        out = part.clone()
        dist.all_reduce(out)
    whole = op(f"{layer}.whole", x, w, b)  # the one-device result, through the same op
    check = check_close(out, x, w, b)
    return {**asdict(case), "rank": rank, "world": world, "kernel": kernel or "dispatch",
            "kernels_run": dict(ck.KERNEL_COUNTS.get(layer, {})), "max_err": check.max_err, "bound": check.bound,
            "ok": check.ok, "one_device_ok": check_close(whole, x, w, b).ok,
            "max_diff_vs_one_device": (out.float() - whole.float()).abs().max().item()}


def run_rank(rank: int, world: int, backend: str, init: str, cases: list[Case], kernels: list[str | None],
             out_dir: str) -> None:
    """One rank: join the group, run every case with every kernel, write this rank's results."""
    dist.init_process_group(backend, init_method=init, rank=rank, world_size=world)
    try:
        if backend == "nccl":
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", rank)))  # torchrun's, else spawn's
            torch.cuda.set_device(device)
        else:
            device = torch.device("cpu")
        results = [shard_linear(c, rank, world, device, k) for k in kernels for c in cases]
        Path(out_dir, f"rank{rank}.json").write_text(json.dumps(results))
    finally:
        dist.destroy_process_group()


def run_ranks(world: int, backend: str, cases: list[Case], kernels: list[str | None]) -> list[dict[str, Any]]:
    """Spawn ``world`` ranks (torch.multiprocessing, a file rendezvous) and return every rank's results."""
    import torch.multiprocessing as mp

    with tempfile.TemporaryDirectory(prefix="ck-tp-") as tmp:
        init = "file://" + os.path.join(tmp, "rendezvous")
        mp.spawn(run_rank, args=(world, backend, init, cases, kernels, tmp), nprocs=world, join=True)
        return [r for i in range(world) for r in json.loads(Path(tmp, f"rank{i}.json").read_text())]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m custom_kernels.tensor_parallel",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="nccl", choices=("nccl", "gloo"))
    parser.add_argument("--ranks", type=int, default=2, help="ranks to spawn when not started by torchrun")
    parser.add_argument("--model", default="llama-3-8b", help="the config whose TP-split linears are checked")
    parser.add_argument("--m", default="1,16,256", help="comma-separated token counts M")
    parser.add_argument("--dtype", default="bfloat16", choices=("bfloat16", "float16", "float32"))
    parser.add_argument("--kernels", default="dispatch,triton_splitk",
                        help="'dispatch' (the table) and/or forced candidates, comma-separated")
    parser.add_argument("--out", help="write every rank's results here (JSON)")
    args = parser.parse_args(argv)
    world = int(os.environ.get("WORLD_SIZE", args.ranks))
    if args.backend == "nccl" and torch.cuda.device_count() < world:
        print(f"error: {world} NCCL ranks need {world} GPUs, {torch.cuda.device_count()} visible: use --ranks "
              f"{max(1, torch.cuda.device_count())} or a host with more GPUs (or --backend gloo on the CPU)",
              file=sys.stderr)
        return 2
    try:
        cases = model_cases(args.model, world, tuple(int(m) for m in args.m.split(",")), args.dtype)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    kernels = [None if k == "dispatch" else k for k in args.kernels.split(",")]
    if "RANK" in os.environ:  # torchrun: this process is one rank; rank 0 gathers nothing, each prints its own
        with tempfile.TemporaryDirectory() as tmp:
            run_rank(int(os.environ["RANK"]), world, args.backend, "env://", cases, kernels, tmp)
            results = json.loads(Path(tmp, f"rank{os.environ['RANK']}.json").read_text())
    else:
        results = run_ranks(world, args.backend, cases, kernels)
    bad = [r for r in results if not r["ok"]]
    for r in results:
        print(f"rank {r['rank']}/{r['world']} {r['kind']:<6} M={r['m']:<5} N={r['n']:<6} K={r['k']:<6} "
              f"{r['dtype']} {r['kernel']:<14} err {r['max_err']:.3g} <= {r['bound']:.3g}: "
              f"{'ok' if r['ok'] else 'WRONG'} (ran {r['kernels_run']})")
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
