"""plan-memory for the fork's vLLM release: whose sizing runs (vLLM's own code imported from the fork, or the
workbench's model of that release, workbench/memory/budget.py) and the child process that imports vLLM.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from workbench.errors import WorkbenchError
from workbench.memory.budget import BuiltinSizer, GpuMemory, MemoryPlan, plan_memory
from workbench.memory.model_shape import ROOT, load_model_shape, resolve_config_path

SIZINGS = ("auto", "vllm", "builtin")


# What workbench/memory/vllm_sizing.py prints before each plan's JSON in the child process.
RESULT_PREFIX = "RESULT "


def planning_release(fork: Path, version: str | None = None) -> tuple[str, str]:
    """The vLLM release to plan for and where that came from: --vllm-version, else the fork's release,
    else the release the project pins (planning needs no fork checkout)."""
    from workbench.container.versions import release_or_pinned

    return (version, "--vllm-version") if version else release_or_pinned(fork)


def plan(model: str, gpu: GpuMemory, *, fork: Path, vllm_version: str, sizing: str = "auto", **knobs) -> MemoryPlan:
    """plan_memory for ``vllm_version``: the workbench's model of the release first (it also checks every
    input), then - unless ``sizing`` is "builtin" - vLLM's own sizing code from the fork's source, which
    replaces it when it imports here; "vllm" makes that a requirement."""
    builtin = plan_memory(load_model_shape(model), gpu, vllm_version=vllm_version, **knobs)
    if sizing == "builtin":
        return builtin
    try:
        return plan_with_vllm(fork, plan_request(model, gpu, vllm_version=vllm_version, **knobs))
    except WorkbenchError as err:
        if sizing == "vllm":
            raise
        note = f"vLLM's own code not used: {err}"
        return MemoryPlan.from_dict({**builtin.to_dict(), "sizing_note": "; ".join(
            n for n in (note, builtin.sizing_note) if n)})


def plan_request(model: str, gpu: GpuMemory, **knobs) -> dict:
    """plan_memory's inputs as JSON (what workbench/memory/vllm_sizing.py reads in the child process)."""
    return {"model": str(resolve_config_path(model)), "gpu": asdict(gpu), **knobs}


def plan_from_request(request: dict, sizer_factory=BuiltinSizer) -> MemoryPlan:
    """plan_memory on a plan_request (the child process's side)."""
    knobs = dict(request)
    shape = load_model_shape(knobs.pop("model"))
    gpu = dict(knobs.pop("gpu"))
    gpu["compute_capability"] = tuple(gpu.get("compute_capability") or (9, 0))
    return plan_memory(shape, GpuMemory(**gpu), sizer_factory=sizer_factory, **knobs)


def plan_with_vllm(fork: Path, request: dict, python: str | None = None, timeout: int = 600) -> MemoryPlan:
    """plan_memory sized by vLLM's own code, imported from the fork's source in a child process
    (``python -m workbench.memory.vllm_sizing``); WorkbenchError (with the child's reason) when vLLM does not
    import there."""
    return plans_with_vllm(fork, [request], python, timeout)[0]


def plans_with_vllm(fork: Path, requests: list[dict], python: str | None = None,
                    timeout: int = 600) -> list[MemoryPlan]:
    """plan_with_vllm for several requests, importing vLLM once."""
    import os
    import subprocess
    import sys


    if not (Path(fork) / "vllm" / "__init__.py").is_file():
        raise WorkbenchError(f"no vLLM source at {fork}", fix="point workbench.fork at your checkout")
    path = os.pathsep.join(filter(None, [str(Path(fork).resolve()), str(ROOT), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONPATH": path, "HF_HUB_OFFLINE": "1", "VLLM_LOGGING_LEVEL": "ERROR",
           "TRANSFORMERS_VERBOSITY": "error"}
    try:
        proc = subprocess.run([python or sys.executable, "-m", "workbench.memory.vllm_sizing"],
                              input=json.dumps(requests),
                              capture_output=True, text=True, env=env, cwd=str(fork), timeout=timeout)
    except subprocess.TimeoutExpired:
        raise WorkbenchError(f"vLLM's sizing did not finish in {timeout} s", fix="use --sizing builtin") from None
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(RESULT_PREFIX)]
    if proc.returncode != 0 or len(lines) != len(requests):
        tail = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
        raise WorkbenchError(f"vLLM from {fork} does not import here ({(tail[-1] if tail else 'no output')[:200]})",
                             fix="install its dependencies in this Python (torch, transformers), or --sizing builtin")
    return [MemoryPlan.from_dict(json.loads(line[len(RESULT_PREFIX):])) for line in lines]


