"""The command `invoke trace` runs through the runtime (pure: values in, argv out; unit-tested)."""

from __future__ import annotations

import shlex
from collections.abc import Callable
from pathlib import Path

from workbench.errors import WorkbenchError

# Keeps vLLM V1's engine core in the script's process so hooks and torch.profiler see the model.
TRACE_ENV = {"VLLM_ENABLE_V1_MULTIPROCESSING": "0", "PYTHONUNBUFFERED": "1"}
ToRuntime = Callable[[Path], "str | None"]


def runtime_path(root: Path, path: str, to_runtime: ToRuntime) -> str:
    """A path of the checkout (relative to its root, or absolute) as the runtime sees it."""
    p = Path(path)
    host = p if p.is_absolute() else root / p
    mapped = to_runtime(host)
    if mapped is None:
        raise WorkbenchError(f"{path} is not visible where the trace runs: put it under scripts/ or results/ of "
                             "the project (the dev container mounts those)")
    return mapped


def trace_command(mode: str, root: Path, to_runtime: ToRuntime, model: str | None = None, prompt: str | None = None,
                  max_tokens: int | None = None, hf_config: str | None = None, top: int | None = None,
                  out: str = "results/trace", custom_gemm: bool = False, extra: str = "",
                  python: str = "python") -> list[str]:
    """argv of `python -m workbench.trace MODE ...`; None values leave the tracer's defaults."""
    if mode not in ("layers", "modules", "kernels"):
        raise WorkbenchError(f"unknown trace mode {mode!r}: use layers, modules or kernels")
    cmd = [python, "-m", "workbench.trace", mode]
    if model:
        cmd += ["--model", model]
    if hf_config:
        cmd += ["--hf-config", runtime_path(root, hf_config, to_runtime)]
    if prompt is not None:
        cmd += ["--prompt", prompt]
    if max_tokens is not None:
        if max_tokens < 1:
            raise WorkbenchError(f"--max-tokens {max_tokens}: give at least 1")
        cmd += ["--max-tokens", str(max_tokens)]
    if top is not None:
        cmd += ["--top", str(top)]
    cmd += ["--out", runtime_path(root, out, to_runtime)]
    if custom_gemm:
        cmd.append("--custom-gemm")
    if extra:
        try:
            cmd += shlex.split(extra)
        except ValueError as err:
            raise WorkbenchError(f"--args {extra!r} is not a valid command line ({err}): check its quotes") from None
    return cmd
