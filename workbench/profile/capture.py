"""What a profiler wraps: one arm's `vllm bench latency --profile`, whose profiled batch vLLM brackets with
cudaProfilerStart/Stop in its engine-core process (``--profiler-config '{"profiler": "cuda"}'``), so Nsight
captures that batch only and not start-up, compilation or warm-up.

The arm's environment is the bench session's own (workbench.bench.plan.arm_env), plus the custom op's NVTX
switch; the spec is the session's (its plan.json) or the task's flags.
"""

from __future__ import annotations

import ast
import json
import re
from dataclasses import dataclass, fields, replace
from pathlib import Path

from workbench.bench import plan as benchplan
from workbench.errors import WorkbenchError
from workbench.models import KERNELS_PACKAGE
from workbench.runtime import Places, posix

# vLLM's `bench latency --profile` accepts the CUDA profiler (cudaProfilerStart/Stop around the profiled batch)
# in 0.24.0; 0.13.0 refuses anything but the torch profiler (both checked in their sources).
CUDA_PROFILER_SINCE = (0, 24)
PROFILER_CONFIG = json.dumps({"profiler": "cuda"})


def nvtx_names(root: Path) -> tuple[str, str]:
    """(range name, switch variable) as custom_kernels/op.py defines them, read without importing it (torch)."""
    source = root / KERNELS_PACKAGE / "op.py"
    found: dict[str, str] = {}
    try:
        tree = ast.parse(source.read_text())
    except OSError:
        raise WorkbenchError(f"{source} is missing: the kernels package is not in this checkout") from None
    for node in tree.body:
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant):
            for target in node.targets:
                if isinstance(target, ast.Name) and target.id in ("NVTX_RANGE", "NVTX_ENV"):
                    found[target.id] = node.value.value
    if set(found) != {"NVTX_RANGE", "NVTX_ENV"}:
        raise WorkbenchError(f"{source} defines no NVTX_RANGE / NVTX_ENV: the op opens no NVTX range to filter on")
    return found["NVTX_RANGE"], found["NVTX_ENV"]


def version_tuple(version: str | None) -> tuple[int, int] | None:
    m = re.match(r"(\d+)\.(\d+)", version or "")
    return (int(m.group(1)), int(m.group(2))) if m else None


def check_profiler_api(vllm_version: str | None) -> None:
    """The capture needs vLLM's CUDA-profiler switch; an older release says so in one line."""
    v = version_tuple(vllm_version)
    if v is not None and v < CUDA_PROFILER_SINCE:
        raise WorkbenchError(f"vLLM {vllm_version}'s `bench latency --profile` takes only the torch profiler, so "
                             "Nsight cannot capture just the profiled batch: use vLLM >= 0.24, or pass --from-start "
                             "(profile from process start, limited by --launch-skip/--launch-count)")


@dataclass(frozen=True)
class Workload:
    """The profiled command of one arm: argv, its environment, and where its files go."""

    arm: str
    argv: tuple[str, ...]
    env: dict[str, str]
    folder: str  # runtime path of the arm's profile folder
    from_start: bool = False  # no profiler-API window: the profiler must capture from process start


def spec_from_session(session_dir: Path) -> benchplan.BenchSpec:
    """The BenchSpec a saved session ran with (its plan.json)."""
    path = session_dir / "plan.json"
    if not path.is_file():
        raise WorkbenchError(f"{session_dir} has no plan.json: name a results/<timestamp>-<model> session that "
                             "`invoke bench` wrote (or drop --session and give --model)")
    data = json.loads(path.read_text()).get("spec", {})
    known = {f.name for f in fields(benchplan.BenchSpec)}
    # JSON has no tuples: every list field of the spec (extra, the serve load points) comes back as a list.
    values = {k: (tuple(v) if isinstance(v, list) else v) for k, v in data.items() if k in known}
    return benchplan.BenchSpec(**values)


def check_arm(arm: str) -> str:
    if arm not in benchplan.ARMS:
        raise WorkbenchError(f"--arm {arm!r} is not one of {', '.join(benchplan.ARMS)}: pick the arm to profile")
    return arm


def profile_spec(spec: benchplan.BenchSpec, output_len: int, batch_size: int | None = None) -> benchplan.BenchSpec:
    """The session's spec for one profiled batch: latency mode, few output tokens (each is a decode step of
    every layer), one warm-up batch, no timed iterations beyond the profiled one."""
    return replace(spec, mode="latency", output_len=output_len, batch_size=batch_size or spec.batch_size,
                   warmup_iters=1, iters=1, aa=False)


def workload(spec: benchplan.BenchSpec, arm: str, places: Places, folder: str, model: benchplan.ModelArgs,
             python: str, root: Path, eager: bool, from_start: bool = False, kernels_digest: str = "",
             vllm_version: str | None = None) -> Workload:
    """argv + env of one arm's profiled batch. ``eager``: --enforce-eager, so the op's kernels run from Python
    and sit inside its NVTX range (a CUDA-graph replay runs no Python and pushes no range)."""
    check_arm(arm)
    if not from_start:
        check_profiler_api(vllm_version)
    extra = [w for w in spec.extra if w != "--enforce-eager"]
    if eager:
        extra.append("--enforce-eager")
    if not from_start:
        extra += ["--profile", "--profiler-config", PROFILER_CONFIG]
    run_spec = replace(spec, extra=tuple(extra))
    argv = benchplan.vllm_bench_argv(run_spec, "latency", f"{folder}/bench.json", model, python)
    _, nvtx_env = nvtx_names(root)
    env = {**benchplan.arm_env(run_spec, arm, places, kernels_digest), nvtx_env: "1" if arm == "custom" else "0",
           # vLLM's Nsight recipe: spawned workers (a forked CUDA process is not traced reliably).
           "VLLM_WORKER_MULTIPROC_METHOD": "spawn", "PYTHONUNBUFFERED": "1"}
    return Workload(arm=arm, argv=tuple(argv), env=env, folder=folder, from_start=from_start)


def attribution_command(spec: benchplan.BenchSpec, mode: str, folder: str, places: Places,
                        model: benchplan.ModelArgs, python: str, kernels_digest: str = "") -> list[str]:
    """(argv, profile folder) of the profiled generates an attribution reads: the paired driver with no timed
    round (``--rounds 0``) and ``--profile-dir``, so each arm's engine runs the session's own batch once under
    vLLM's torch profiler (traces in ``folder``/<arm>/: <session>/profile/<mode> as the runtime names it)."""
    if mode not in benchplan.MODES:
        raise WorkbenchError(f"--mode {mode!r} is not one of {', '.join(benchplan.MODES)}")
    arms = {arm: benchplan.arm_env(spec, arm, places, kernels_digest) for arm in benchplan.ARMS}
    argv = [python, places.guest_script("engine_ab.py"), "--model", model.model,
            *(["--tokenizer", model.tokenizer] if model.tokenizer else []),
            *(["--load-format", model.load_format] if model.load_format else []),
            "--mode", mode, "--arms", json.dumps(arms, sort_keys=True), "--rounds", "0",
            "--batch-size", str(spec.batch_size), "--num-prompts", str(spec.num_prompts),
            "--input-len", str(spec.input_len), "--output-len", str(spec.output_len), "--seed", str(spec.seed),
            "--tp", str(spec.tp), "--out", posix(folder, "engine_ab.json"), "--profile-dir", folder]
    return argv
