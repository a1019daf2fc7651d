"""`invoke install` (precompiled or full build of the fork, in the dev container) and `invoke rebuild`."""

from __future__ import annotations

import shutil
from pathlib import Path

from invoke import task
from rich.console import Console
from rich.markup import escape

from workbench import install as inst
from workbench import patches
from workbench.config import Settings, settings_from_context
from workbench.errors import WorkbenchError, user_errors
from workbench.runtime import HostRuntime, host_python, open_runtime, plan_places, runtime_name
from workbench.source import require_initialised
from workbench.values import as_int


class _PlannedRuntime:
    """What --dry-run knows of the runtime without connecting: its paths."""

    def __init__(self, settings: Settings, flag: str | None):
        self.places, self.python, _ = plan_places(settings, flag)
        self._host = runtime_name(settings, flag) == "host"
        self._settings = settings

    def from_host(self, path: Path) -> str | None:
        if self._host:
            return HostRuntime(self._settings).from_host(path)
        from workbench import compose
        from workbench.engine import MountMap

        return MountMap.of(compose.load_spec(self._settings)).from_host(path)


def _run(runtime, plan: inst.InstallPlan, console: Console, dry_run: bool) -> None:
    for note in plan.notes:
        console.print(f"[bold]{escape(note)}[/bold]")
    if dry_run:
        for line in plan.describe():
            console.print(line, markup=False, highlight=False, soft_wrap=True)
        return
    for i, step in enumerate(plan.steps, 1):
        console.print(f"[cyan][{i}/{len(plan.steps)}] {escape(step.name)}[/cyan]")
        rc = runtime.run(step.cmd, env=step.env, cwd=step.workdir)
        if rc != 0:
            raise WorkbenchError(f"`{step.name}` failed on {runtime.describe()} (exit {rc}); its output is above")
    console.print(f"[green]installed ({plan.mode}) on {escape(runtime.describe())}; record in "
                  f"{escape(runtime.places.install_record)}[/green]")


def _wheel_location(settings: Settings, runtime, wheel: inst.WheelChoice, console: Console,
                    dry_run: bool) -> str | None:
    """The wheel as the runtime sees it: URLs as they are, files through a folder it sees (a wheel the
    dev container cannot see is copied into the mounted wheels folder first)."""
    if wheel.location is None or "://" in wheel.location:
        return wheel.location
    host = Path(wheel.location).expanduser()
    if not host.is_file():
        raise WorkbenchError(f"no wheel file at {host}: pass an existing .whl path or an http(s) URL")
    mapped = runtime.from_host(host)
    if mapped is None:
        target = settings.wheels_path / host.name
        if dry_run:
            console.print(f"would copy {host} to {target} (the container sees {runtime.places.wheels})")
        elif not target.exists():
            console.print(f"copying {host} to {target} (the container sees {runtime.places.wheels})")
            settings.wheels_path.mkdir(parents=True, exist_ok=True)
            shutil.copy2(host, target)
        mapped = runtime.from_host(target)
    return mapped


def _host_venv(settings: Settings, console: Console, dry_run: bool) -> None:
    """The host runtime installs into the venv workbench.python names: made (seeing the system's packages,
    torch among them) when it does not exist yet."""
    python = Path(host_python(settings))
    if python.exists():
        return
    venv = python.parent.parent
    if python.parent.name != "bin" or not python.name.startswith("python"):
        raise WorkbenchError(f"workbench.python {python} does not exist: point it at an interpreter, or at "
                             "<venv>/bin/python of a venv to create")
    console.print(f"creating the venv {venv} (--system-site-packages: it sees this host's torch)")
    if not dry_run:
        import venv as venvlib

        venvlib.EnvBuilder(system_site_packages=True, with_pip=True).create(venv)


def _arch_and_jobs(settings: Settings, arch: str | None, jobs: int | None) -> tuple[str, inst.Jobs]:
    gpus, why = [], ""
    if not arch:
        from workbench.gpus import query_gpus, select

        try:
            found = query_gpus()
        except WorkbenchError as err:  # no NVML / driver here: arch_list says to pass --arch
            found, why = [], str(err)
        gpus = select(found, settings.gpus)
    return inst.arch_list(gpus, arch, why), inst.choose_jobs(*inst.host_resources(), requested=jobs)


@task(help={
    "runtime": "docker (the dev container) or host (workbench.python, a venv made if it does not exist)",
    "precompiled": "install the fork editable over a precompiled wheel's binaries (default; Python-only changes)",
    "full": "compile the fork's csrc/ (nvcc + ccache) and install it editable",
    "wheel": "precompiled: this wheel (path or URL) instead of the cached / merge-base one",
    "arch": "full: TORCH_CUDA_ARCH_LIST, e.g. '9.0a' (default: the selected GPUs' compute capability)",
    "jobs": "full: MAX_JOBS (default: from cores and RAM, ~3 GB per nvcc thread)",
    "no_deps": "pass --no-deps to pip (offline, or the image already has vLLM's dependencies)",
    "dry_run": "print the in-container commands and environment, run nothing",
})
@user_errors
def install(c, precompiled=False, full=False, wheel=None, arch=None, jobs=None, no_deps=False, runtime=None,
            dry_run=False):
    """Install the vLLM fork editable where steps run (dev container or host venv), verified and recorded."""
    if precompiled and full:
        raise WorkbenchError("choose one of --precompiled and --full")
    settings = settings_from_context(c)
    console = Console()
    fork = require_initialised(settings.fork_path)
    version, _ = patches.detect_version(fork)
    series = patches.applied_series(fork)
    jobs_ = as_int("--jobs", jobs, 0, 1) or None
    if full and wheel:
        raise WorkbenchError("--wheel is for --precompiled; a full build compiles csrc/ itself")
    if wheel and "://" in wheel and not wheel.split("://", 1)[1].strip("/"):
        raise WorkbenchError(f"--wheel {wheel!r} is not a wheel URL: give https://HOST/PATH/vllm-*.whl or a file")
    if full:
        arch_list, chosen = _arch_and_jobs(settings, arch, jobs_)
    else:
        choice = inst.resolve_wheel(fork, version, wheel, settings.wheels_path)
        for warning in inst.check_wheel_matches(fork, choice):
            console.print(f"[yellow]warning: {escape(warning)}[/yellow]")
    if runtime_name(settings, runtime) == "host":
        _host_venv(settings, console, dry_run)
    rt = open_runtime(settings, runtime) if not dry_run else None
    try:
        places, python, _ = plan_places(settings, runtime) if rt is None else (rt.places, rt.python, "")
        if full:
            plan = inst.full_plan(places, python, version, inst.head_commit(fork), arch_list, chosen, series,
                                  no_deps=no_deps)
        else:
            location = _wheel_location(settings, rt or _PlannedRuntime(settings, runtime), choice, console, dry_run)
            plan = inst.precompiled_plan(places, python, version, choice, location, series, no_deps=no_deps)
        _run(rt, plan, console, dry_run)
    finally:
        if rt is not None:
            rt.close()


@task(help={
    "runtime": "docker (the dev container) or host (workbench.python)",
    "arch": "TORCH_CUDA_ARCH_LIST, e.g. '9.0a' (default: the selected GPUs' compute capability)",
    "jobs": "parallel compile jobs (default: from cores and RAM, ~3 GB per nvcc thread)",
    "dry_run": "print the in-container commands and environment, run nothing",
})
@user_errors
def rebuild(c, arch=None, jobs=None, runtime=None, dry_run=False):
    """Incremental rebuild of csrc/ through CMake presets (after a full install), ccache hit stats shown."""
    settings = settings_from_context(c)
    require_initialised(settings.fork_path)
    arch_list, chosen = _arch_and_jobs(settings, arch, as_int("--jobs", jobs, 0, 1) or None)
    if dry_run:
        places, python, _ = plan_places(settings, runtime)
        _run(None, inst.rebuild_plan(places, python, arch_list, chosen), Console(), dry_run)
        return
    rt = open_runtime(settings, runtime)
    try:
        _run(rt, inst.rebuild_plan(rt.places, rt.python, arch_list, chosen), Console(), dry_run)
    finally:
        rt.close()


TASKS = [install, rebuild]
