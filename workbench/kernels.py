"""The custom_kernels tasks' logic: build the tune / benchmark commands that run in the dev container.

The GEMM tuner and benchmark need the GPU, so they run inside the dev container (where
./custom_kernels is mounted at /workspace/custom_kernels); with ``here=True`` they run in this
host's own Python instead (a GPU host without the container). Results land in the mounted folder,
so they appear in the project: the table in custom_kernels/custom_kernels/tables/, benchmark
CSV/JSON/PNG in custom_kernels/bench/results/<gpu>/.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from .config import Settings
from .errors import WorkbenchError

CONTAINER_ROOT = "/workspace/custom_kernels"  # docker-compose.yml mounts ./custom_kernels here
PACKAGE_DIR = Path("custom_kernels") / "custom_kernels"
DTYPES = ("bfloat16", "float16")


def shipped_models(root: Path) -> list[str]:
    """Model configs shipped in custom_kernels/custom_kernels/configs/<name>/config.json."""
    return sorted(p.parent.name for p in (root / PACKAGE_DIR / "configs").glob("*/config.json"))


def model_argument(root: Path, model: str, kernels_root: str) -> str:
    """A --model value the command can use where it runs: a shipped name, or a path under custom_kernels/."""
    if model in shipped_models(root):
        return model
    path = Path(model).expanduser()
    path = path if path.is_absolute() else Path.cwd() / path
    if path.is_dir():
        path = path / "config.json"
    if not path.is_file():
        raise WorkbenchError(f"no model config {model!r}: use one of {', '.join(shipped_models(root))} "
                             f"or a config.json under custom_kernels/")
    try:
        rel = path.resolve().relative_to((root / "custom_kernels").resolve())
    except ValueError:
        raise WorkbenchError(f"{model} is outside custom_kernels/, which is all the container sees: "
                             f"copy it to custom_kernels/custom_kernels/configs/<name>/config.json") from None
    return f"{kernels_root}/{rel.as_posix()}"


def _common(root: Path, models: list[str], tp: int, dtype: str, kernels_root: str) -> list[str]:
    if tp < 1:
        raise WorkbenchError(f"--tp {tp} is below 1: give a tensor-parallel size of at least 1")
    if dtype not in DTYPES:
        raise WorkbenchError(f"--dtype {dtype!r}: choose one of {', '.join(DTYPES)}")
    args = []
    for model in models:
        args += ["--model", model_argument(root, model, kernels_root)]
    return [*args, "--tp", str(tp), "--dtype", dtype]


def tune_command(root: Path, models: list[str], tp: int = 1, dtype: str = "bfloat16", buckets: str = "",
                 kernels: str = "", python: str = "python3", kernels_root: str = CONTAINER_ROOT) -> list[str]:
    """``python -m custom_kernels.tune ...`` for the given models (all shipped ones when empty)."""
    cmd = [python, "-m", "custom_kernels.tune", *_common(root, models, tp, dtype, kernels_root)]
    if buckets:
        cmd += ["--buckets", buckets]
    if kernels:
        cmd += ["--kernels", kernels]
    return cmd


def bench_command(root: Path, models: list[str], tp: int = 1, dtype: str = "bfloat16", m: str = "",
                  plot: bool = True, python: str = "python3", kernels_root: str = CONTAINER_ROOT) -> list[str]:
    """``python -m custom_kernels.bench.gemm ...``: table + plot from one command."""
    cmd = [python, "-m", "custom_kernels.bench.gemm", *_common(root, models, tp, dtype, kernels_root)]
    if m:
        cmd += ["--m", m]
    if plot:
        cmd.append("--plot")
    return cmd


def kernel_env(kernels_root: str) -> dict[str, str]:
    """The package importable from its source folder (also when not pip-installed), output unbuffered."""
    return {"PYTHONPATH": kernels_root, "PYTHONUNBUFFERED": "1"}


def run_kernel_command(settings: Settings, cmd: list[str], here: bool = False) -> int:
    """Run in the dev container (default) or in this host's Python (``here``); returns the exit code."""
    if here:
        local_root = str(settings.root / "custom_kernels")
        env = {**os.environ, **kernel_env(local_root)}
        return subprocess.call([sys.executable if cmd[0] == "python3" else cmd[0], *cmd[1:]], env=env,
                               cwd=local_root)
    from .engine import exec_in_container  # the foundation's docker layer (issue 2)

    return exec_in_container(settings, cmd, env=kernel_env(CONTAINER_ROOT), workdir=CONTAINER_ROOT)


def import_custom_kernels(package_dir: Path | None = None) -> Any:
    """The custom_kernels package (installed, or from ``package_dir``: the project's custom_kernels/ folder
    that holds the package of the same name, which would otherwise import as an empty namespace package)."""
    import importlib
    import sys

    try:
        mod = importlib.import_module("custom_kernels")
    except ImportError:
        mod = None
    if mod is not None and hasattr(mod, "unquantized_gemm"):
        return mod
    sys.modules.pop("custom_kernels", None)
    if package_dir is not None and (Path(package_dir) / "custom_kernels" / "__init__.py").is_file():
        sys.path.insert(0, str(package_dir))
        mod = importlib.import_module("custom_kernels")
        if hasattr(mod, "unquantized_gemm"):
            return mod
    raise WorkbenchError("custom_kernels is not importable: pip install -e custom_kernels (the container's "
                         "invoke install does it)")
