"""What a profiling task profiles: the saved session it names (or the task's flags), the model folder it needs,
and the arm's workload where the runtime runs it. The tasks (workbench/tasks/profile.py) only parse flags, print
and run; the runtime's places and its view of host paths come in from there."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from workbench import flags
from workbench.bench import plan as benchplan
from workbench.bench.results import read_env, session_path, vllm_version
from workbench.errors import WorkbenchError
from workbench.runtime import Places, posix


def session_dir(results: Path, session: str) -> Path:
    """The saved bench session ``session`` names (a folder under results/, or its name)."""
    path = session_path(results, session)
    if not (path / "plan.json").is_file():
        raise WorkbenchError(f"unknown session {session!r} (no plan.json under {path}): name a folder that "
                             "`invoke bench` wrote under results/, e.g. results/20261130-053508-llama-3-8b")
    return path


def visible(to_runtime: Callable[[Path], str | None], host: Path) -> str:
    """How the runtime names a host folder of the results (one line when it cannot see it)."""
    mapped = to_runtime(host)
    if mapped is None:
        raise WorkbenchError(f"{host} is not visible where the steps run: copy the session under results/")
    return mapped


def profiled(settings, places: Places, python: str, to_runtime: Callable[[Path], str | None], arm: str,
             session: str | None, model: str | None, batch_size, output_len, eager: bool, from_start: bool,
             tool_name: str):
    """(workload, model setup, spec) of one arm's profiled batch: the session's spec and environment, or the
    task's model; the files go to <session>/profile/<tool>/ or results/profile/<stamp>-<model>/."""
    from workbench.bench import session as bench_session
    from workbench.profile import capture

    capture.check_arm(arm)
    saved = session_dir(settings.results_path, session) if session else None
    spec = capture.spec_from_session(saved) if saved else benchplan.BenchSpec(model=model or
                                                                              benchplan.BenchSpec.model)
    out_len = flags.integer("--output-len", output_len, minimum=1, example="8") or 8
    batch = flags.integer("--batch-size", batch_size, minimum=1, example="8")
    spec = benchplan.validate_spec(capture.profile_spec(spec, out_len, batch))
    setup = bench_session.model_setup(settings.root, settings.results_path, places.results, spec)
    if saved:
        folder = visible(to_runtime, saved.absolute() / "profile" / tool_name)
    else:
        stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
        folder = posix(places.results, "profile", f"{stamp}-{benchplan.model_slug(spec.model)}")
    work = capture.workload(spec, arm, places, folder, setup.args, python, settings.root, eager=eager,
                            from_start=from_start, kernels_digest=bench_session.kernels_digest(settings.root),
                            vllm_version=vllm_version(read_env(saved)) if saved else None)
    return work, setup, spec
