"""The command `invoke trace` runs in the dev container (pure: values in, argv out; unit-tested)."""

from __future__ import annotations

import shlex
from pathlib import Path, PurePosixPath

from workbench.errors import WorkbenchError

CONTAINER_ROOT = PurePosixPath("/workspace")
# Project folders the dev container mounts under /workspace (docker-compose.yml); workbench/ carries this
# library into the container for the scripts.
MOUNTED = ("scripts", "results", "custom_kernels", "vllm", "patches", "workbench")
# Keeps vLLM V1's engine core in the script's process so hooks and torch.profiler see the model.
TRACE_ENV = {"VLLM_ENABLE_V1_MULTIPROCESSING": "0", "PYTHONUNBUFFERED": "1"}


def container_path(root: Path, path: str) -> str:
    """A host path under the project as the container sees it (only mounted folders are visible)."""
    p = Path(path)
    if p.is_absolute():
        if p.as_posix().startswith(str(CONTAINER_ROOT) + "/"):
            return p.as_posix()  # already a container path
        try:
            p = p.resolve().relative_to(root.resolve())
        except ValueError:
            raise WorkbenchError(f"{path} is not visible in the container: put it under scripts/ or results/ "
                                 f"of the project (mounted at {CONTAINER_ROOT})") from None
    if not p.parts or p.parts[0] not in MOUNTED:
        raise WorkbenchError(f"{path} is not in a folder the container mounts ({', '.join(MOUNTED)}): "
                             "move it under scripts/ or results/")
    return str(CONTAINER_ROOT.joinpath(*p.parts))


def trace_command(mode: str, root: Path, model: str | None = None, prompt: str | None = None,
                  max_tokens: int | None = None, hf_config: str | None = None, top: int | None = None,
                  out: str = "results/trace", custom_gemm: bool = False, extra: str = "",
                  python: str = "python") -> list[str]:
    """argv for scripts/trace_<mode>.py inside the container; None values leave the script's defaults."""
    if mode not in ("layers", "modules", "kernels"):
        raise WorkbenchError(f"unknown trace mode {mode!r}: use --layers, --modules or --kernels")
    cmd = [python, str(CONTAINER_ROOT / "scripts" / f"trace_{mode}.py")]
    if model:
        cmd += ["--model", model]
    if hf_config:
        cmd += ["--hf-config", container_path(root, hf_config)]
    if prompt is not None:
        cmd += ["--prompt", prompt]
    if max_tokens is not None:
        if max_tokens < 1:
            raise WorkbenchError(f"--max-tokens {max_tokens}: give at least 1")
        cmd += ["--max-tokens", str(max_tokens)]
    if top is not None:
        cmd += ["--top", str(top)]
    cmd += ["--out", container_path(root, out)]
    if custom_gemm:
        cmd.append("--custom-gemm")
    if extra:
        cmd += shlex.split(extra)
    return cmd


def pick_mode(layers: bool, modules: bool, kernels: bool) -> str:
    """Exactly one of the three flags."""
    chosen = [m for m, on in (("layers", layers), ("modules", modules), ("kernels", kernels)) if on]
    if len(chosen) != 1:
        raise WorkbenchError("give exactly one of --layers, --modules or --kernels "
                             "(e.g. invoke trace --layers --model Qwen/Qwen2.5-0.5B-Instruct)")
    return chosen[0]
