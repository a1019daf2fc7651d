"""Tasks for custom_kernels: tune the GEMM dispatch table (the benchmark is `invoke bench --kernels`)."""

from __future__ import annotations

from invoke import task

from .. import flags
from ..config import settings_from_context
from ..errors import WorkbenchError, user_errors
from ..kernels import run_kernel_command, tune_command

_COMMON_HELP = {
    "model": "model config: a shipped name (qwen2.5-0.5b, tinyllama-1.1b, llama-3-8b) or a config.json "
             "under custom_kernels/; repeatable; default: all shipped",
    "tp": "tensor-parallel size the linear shapes are split for (default 1)",
    "dtype": "GEMM dtype: bfloat16 (default) or float16",
    "here": "run in this host's Python instead of the dev container (a GPU host without Docker)",
    "dry_run": "print the command, run nothing",
}


def _finish(ctx, cmd: list[str], here: bool, dry_run: bool, what: str) -> None:
    print(("(dry run) " if dry_run else "") + ("here: " if here else "in the container: ") + " ".join(cmd))
    if dry_run:
        return
    code = run_kernel_command(settings_from_context(ctx), cmd, here=here)
    if code != 0:
        raise WorkbenchError(f"{what} exited with {code}: see its output above")


@task(iterable=["model"], help={**_COMMON_HELP,
                                "buckets": "comma-separated M buckets to tune (default 1,2,4,...,8192)",
                                "kernels": "candidates to try (default triton_splitk,triton_tma,cublaslt)"})
@user_errors
def tune(ctx, model=None, tp=None, dtype="bfloat16", buckets="", kernels="", here=False, dry_run=False):
    """Measure every GEMM candidate vs cuBLAS for a model's shapes; merge the winners into the dispatch table."""
    tp_ = flags.integer("--tp", tp, minimum=1, example="2") or 1
    chosen = flags.integer_list("--buckets", buckets, minimum=1, example="1,16,256,4096")
    root = settings_from_context(ctx).root
    cmd = tune_command(root, list(model or []), tp_, dtype, ",".join(map(str, chosen or [])), kernels)
    _finish(ctx, cmd, here, dry_run, "tune")


TASKS = [tune]  # the kernel benchmark is `invoke bench --kernels` (workbench/tasks/bench.py)
