"""kernels.tune and kernels.bench: the GEMM dispatch table and the kernel-level benchmark of custom_kernels,
run where the runtime runs steps (the dev container, or this host with --runtime host)."""

from __future__ import annotations

import shlex

from invoke import Collection, task

from workbench import flags, ui
from workbench.bench.kernels import bench_command, run_kernel_command, tune_command
from workbench.config import settings_from_context
from workbench.errors import WorkbenchError
from workbench.tasks.runtimes import plan_places

_COMMON_HELP = {
    "model": "model config: a shipped name (custom_kernels/src/custom_kernels/configs/) or a config.json "
             "under custom_kernels/; repeatable; default: all shipped",
    "tp": "tensor-parallel size the linear shapes are split for (default 1)",
    "dtype": "GEMM dtype: bfloat16 (default) or float16",
    "runtime": "docker (the dev container) or host (this machine's workbench.python); default workbench.runtime",
    "dry_run": "print the command, run nothing",
}


def _finish(ctx, build, runtime: str | None, dry_run: bool, what: str) -> None:
    settings = settings_from_context(ctx)
    places, python, where = plan_places(settings, runtime)
    cmd = build(settings.root, python, places.kernels)
    ui.console.out(("(dry run) " if dry_run else "") + f"on {where}: {shlex.join(cmd)}")
    if dry_run:
        return
    from workbench.tasks.runtimes import open_runtime

    rt = open_runtime(settings, runtime)
    try:
        if what == "tune":  # a line per shape and M bucket, counted "[k/N]": one bar with ETA instead
            with ui.CountedProgress("tune") as progress:
                code = run_kernel_command(rt, cmd, out=progress.write)
        else:
            code = run_kernel_command(rt, cmd)
    finally:
        rt.close()
    if code != 0:
        raise WorkbenchError(f"{what} exited with {code}: see its output above")


@task(iterable=["model"], help={**_COMMON_HELP,
                                "tp": "tensor-parallel size(s) the shapes are split for: 2, or a list 1,2,4,8 "
                                      "(default 1; one GPU tunes any size: a rank's GEMM is its own)",
                                "buckets": "comma-separated M buckets to tune (default 1,2,4,...,8192)",
                                "kernels": "candidates to try (default triton_splitk,triton_tma,cublaslt)"})
def tune(ctx, model=None, tp=None, dtype="bfloat16", buckets="", kernels="", runtime=None, dry_run=False):
    """Measure every GEMM candidate vs cuBLAS for a model's shapes; merge the winners into the dispatch table."""
    tp_ = flags.integer_list("--tp", tp, minimum=1, example="2,4,8") or [1]
    chosen = ",".join(map(str, flags.integer_list("--buckets", buckets, minimum=1, example="1,16,256,4096") or []))
    _finish(ctx, lambda root, py, kr: tune_command(root, list(model or []), tp_, dtype, chosen, kernels, py, kr),
            runtime, dry_run, "tune")


@task(iterable=["model"], help={**_COMMON_HELP, "m": "comma-separated M values (default: the benchmark's list)",
                                "extra": "more flags for python -m custom_kernels.bench.gemm"})
def bench(ctx, model=None, tp=None, dtype="bfloat16", m="", extra="", runtime=None, dry_run=False):
    """Kernel-level GEMM benchmark: every candidate and the dispatch vs cuBLAS, table + plot + CSV/JSON."""
    from workbench.bench.plan import parse_extra

    tp_ = flags.integer("--tp", tp, minimum=1, example="2") or 1
    more = list(parse_extra(extra))
    _finish(ctx, lambda root, py, kr: bench_command(root, list(model or []), tp_, dtype, m, True, py, kr) + more,
            runtime, dry_run, "custom_kernels.bench.gemm")


ns = Collection("kernels")
ns.add_task(tune)
ns.add_task(bench)
