"""The custom_kernels tasks' logic: build the tune / benchmark commands that run in the dev container.

The GEMM tuner and benchmark need the GPU, so they run through the runtime: the dev container (where
./custom_kernels is mounted) or this host (``--runtime host``). Results land in the package's folder,
so they appear in the project: the tables (one per GPU) in custom_kernels/src/custom_kernels/tables/, benchmark
CSV/JSON/PNG in custom_kernels/bench/results/<gpu>/.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from workbench import models
from workbench.errors import WorkbenchError

DTYPES = ("bfloat16", "float16")


def model_argument(root: Path, model: str, kernels_root: str) -> str:
    """A --model value the command can use where it runs: a shipped name, or a config under custom_kernels/
    (the folder every runtime sees) as the runtime names it."""
    config = models.resolve_config(root, model)
    if config.parent.parent == models.config_dir(root):
        return config.parent.name
    try:
        rel = config.resolve().relative_to((root / "custom_kernels").resolve())
    except ValueError:
        raise WorkbenchError(f"{model} is outside custom_kernels/, which is all the container sees: "
                             f"copy it to custom_kernels/src/custom_kernels/configs/<name>/config.json") from None
    return f"{kernels_root}/{rel.as_posix()}"


def tp_problem(root: Path, model: str, tp: int) -> str | None:
    """Why vLLM can't split this model TP ways ("what is wrong: what to do"), or None (models.py's rule). A
    config the rule can't read (not a dense decoder's) is vLLM's to judge: None."""
    config = models.resolve_config(root, model)
    try:
        dims = models.model_dims(root, json.loads(config.read_text()), models.config_name(root, config))
    except (ValueError, TypeError):  # json.JSONDecodeError is a ValueError
        return None
    problem = dims.tp_problem(tp)
    if problem is None:
        return None
    return f"--tp {problem} of {dims.name}: use one of {', '.join(map(str, dims.tp_choices()))}"


def _common(root: Path, models_: list[str], tp: int | list[int], dtype: str, kernels_root: str) -> list[str]:
    sizes = tp if isinstance(tp, list) else [tp]
    if not sizes or min(sizes) < 1:
        raise WorkbenchError(f"--tp {min(sizes, default=0)} is below 1: give a tensor-parallel size of at least 1")
    if dtype not in DTYPES:
        raise WorkbenchError(f"--dtype {dtype!r}: choose one of {', '.join(DTYPES)}")
    args = []
    for model in models_:
        args += ["--model", model_argument(root, model, kernels_root)]
        for size in sizes:  # named models must split; the shipped set (no --model) drops those that can't
            if (problem := tp_problem(root, model, size)) is not None:
                raise WorkbenchError(problem)
    return [*args, "--tp", ",".join(map(str, sizes)), "--dtype", dtype]


def tune_command(root: Path, models: list[str], tp: int | list[int] = 1, dtype: str = "bfloat16", buckets: str = "",
                 kernels: str = "", python: str = "python3", kernels_root: str = "custom_kernels") -> list[str]:
    """``python -m custom_kernels.tune ...`` for the given models (all shipped ones when empty)."""
    cmd = [python, "-m", "custom_kernels.tune", *_common(root, models, tp, dtype, kernels_root)]
    if buckets:
        cmd += ["--buckets", buckets]
    if kernels:
        cmd += ["--kernels", kernels]
    return cmd


def bench_command(root: Path, models: list[str], tp: int = 1, dtype: str = "bfloat16", m: str = "",
                  plot: bool = True, python: str = "python3", kernels_root: str = "custom_kernels") -> list[str]:
    """``python -m custom_kernels.bench.gemm ...``: table + plot from one command."""
    cmd = [python, "-m", "custom_kernels.bench.gemm", *_common(root, models, tp, dtype, kernels_root)]
    if m:
        cmd += ["--m", m]
    if plot:
        cmd.append("--plot")
    return cmd


def kernel_env(import_root: str) -> dict[str, str]:
    """The package importable from its source folder (also when not pip-installed), output unbuffered."""
    return {"PYTHONPATH": import_root, "PYTHONUNBUFFERED": "1"}


def run_kernel_command(runtime, cmd: list[str], out=None) -> int:
    """Run a kernels-package command where ``runtime`` runs steps (the dev container or this host), from
    the package's folder so its results land in custom_kernels/ of the checkout; returns the exit code.
    ``out`` takes both output streams (default: this process's stdout and stderr)."""
    places = runtime.places
    return runtime.run(cmd, env=kernel_env(places.kernels_import_root), cwd=places.kernels, out=out, err=out)


def import_custom_kernels(package_dir: Path | None = None) -> Any:
    """The custom_kernels package (installed, or from ``package_dir``: the project's custom_kernels/ folder,
    its package under src/)."""
    import importlib
    import sys

    try:
        mod = importlib.import_module("custom_kernels")
    except ImportError:
        mod = None
    if mod is not None and hasattr(mod, "unquantized_gemm"):
        return mod
    sys.modules.pop("custom_kernels", None)
    if package_dir is not None and (Path(package_dir) / "src" / "custom_kernels" / "__init__.py").is_file():
        sys.path.insert(0, str(Path(package_dir) / "src"))
        mod = importlib.import_module("custom_kernels")
        if hasattr(mod, "unquantized_gemm"):
            return mod
    raise WorkbenchError("custom_kernels is not importable: pip install -e custom_kernels (the container's "
                         "invoke install does it)")
