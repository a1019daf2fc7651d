"""`invoke install` (precompiled or full build of the fork, where the runtime runs steps) and `invoke rebuild`."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

from invoke import task
from rich.console import Console
from rich.markup import escape

from workbench import flags, ui
from workbench.config import Settings, settings_from_context
from workbench.errors import WorkbenchError
from workbench.fork import install as inst
from workbench.fork.series import detect_version
from workbench.fork.source import fork_state
from workbench.runtime import Places, host_python, runtime_name
from workbench.tasks.runtimes import open_runtime, path_mapper, plan_places


def _check_torch(settings: Settings, fork: Path, console: Console, allow_mismatch: bool) -> None:
    """Before anything runs in the container: its image's torch is the one the fork pins."""
    from workbench.container import daemon, lifecycle, versions

    client = daemon.connect()
    check = versions.check_install_image(client, lifecycle.installed_image(client, settings), fork)
    if not check.ok and not allow_mismatch:
        raise WorkbenchError(check.message, fix=versions.torch_fix(fork, "", "install"))
    console.print(check.message, style="yellow" if not check.ok else "dim", markup=False)


def _run(runtime, plan: inst.InstallPlan, console: Console, dry_run: bool, logs: Path | None = None) -> None:
    for note in plan.notes:
        console.print(f"[bold]{escape(note)}[/bold]")
    if dry_run:
        for line in plan.describe():
            console.print(line, markup=False, highlight=False, soft_wrap=True)
        return
    for i, step in enumerate(plan.steps, 1):
        console.print(f"[cyan][{i}/{len(plan.steps)}] {escape(step.name)}[/cyan]")
        if not (step.counted and logs is not None):
            rc = runtime.run(step.cmd, env=step.env, cwd=step.workdir)
            if rc != 0:
                raise WorkbenchError(f"`{step.name}` failed on {runtime.describe()} (exit {rc}); its output is above")
            continue
        log_path = ui.step_log(logs, plan.mode)
        console.print(f"full output: {log_path}", style="dim", markup=False)
        with log_path.open("w") as log, ui.CountedProgress("compile", log=log, quiet=True) as progress:
            rc = runtime.run(step.cmd, env=step.env, cwd=step.workdir, out=progress.write, err=progress.write)
        if rc != 0:
            ui.print_build_failure(list(progress.tail))
            raise WorkbenchError(f"`{step.name}` failed on {runtime.describe()} (exit {rc}); the last lines are "
                                 f"above, all of them in {log_path}")
    console.print(f"[green]installed ({plan.mode}) on {escape(runtime.describe())}; record in "
                  f"{escape(runtime.places.install_record)}[/green]")


def _wheel_location(settings: Settings, places: Places, to_runtime: Callable[[Path], str | None],
                    wheel: inst.WheelChoice, console: Console, dry_run: bool) -> str | None:
    """The wheel as the runtime sees it: URLs as they are, files through a folder it sees (a wheel the
    dev container cannot see is copied into the mounted wheels folder first)."""
    if wheel.location is None or "://" in wheel.location:
        return wheel.location
    host = Path(wheel.location).expanduser()
    if not host.is_file():
        raise WorkbenchError(f"no wheel file at {host}: pass an existing .whl path or an http(s) URL")
    mapped = to_runtime(host)
    if mapped is None:
        target = settings.wheels_path / host.name
        if dry_run:
            console.print(f"would copy {host} to {target} (the container sees {places.wheels})")
        elif not target.exists():
            console.print(f"copying {host} to {target} (the container sees {places.wheels})")
            settings.wheels_path.mkdir(parents=True, exist_ok=True)
            shutil.copy2(host, target)
        mapped = to_runtime(target)
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
    if arch:
        inst.check_arch(arch)
    else:
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
    "allow_torch_mismatch": "install even when the container's torch is not the one the fork's requirements pin",
    "dry_run": "print the commands and environment, run nothing",
})
def install(c, precompiled=False, full=False, wheel=None, arch=None, jobs=None, no_deps=False,
            allow_torch_mismatch=False, runtime=None, dry_run=False):
    """Install the vLLM fork editable where steps run (dev container or host venv), verified and recorded."""
    if precompiled and full:
        raise WorkbenchError("--precompiled and --full exclude each other: give one of them")
    jobs = flags.integer("--jobs", jobs, minimum=1, maximum=1024, example="8")
    if full and wheel:
        raise WorkbenchError("--wheel is for --precompiled (a full build compiles csrc/ itself): drop --wheel, or "
                             "use --precompiled")
    if not full and (arch or jobs):
        raise WorkbenchError(f"{'--arch' if arch else '--jobs'} is for --full (a precompiled install compiles "
                             "nothing): add --full, or drop it")
    if wheel:
        inst.check_wheel_argument(wheel)
    settings = settings_from_context(c)
    host = runtime_name(settings, runtime) == "host"
    console = ui.console
    state = fork_state(settings.fork_path).require()
    fork = state.path
    version, _ = detect_version(fork)
    series = list(state.patches)
    if full:
        arch_list, chosen = _arch_and_jobs(settings, arch, jobs)
    else:
        choice = inst.resolve_wheel(fork, version, wheel, settings.wheels_path)
        for warning in inst.check_wheel_matches(fork, choice):
            console.print(f"[yellow]warning: {escape(warning)}[/yellow]")
    if host:
        _host_venv(settings, console, dry_run)
    elif not dry_run:
        _check_torch(settings, fork, console, allow_torch_mismatch)
    places, python, _ = plan_places(settings, runtime)
    if full:
        plan = inst.full_plan(places, python, version, state.commit, arch_list, chosen, series,
                              no_deps=no_deps)
    else:
        location = _wheel_location(settings, places, path_mapper(settings, runtime), choice, console, dry_run)
        plan = inst.precompiled_plan(places, python, version, choice, location, series, no_deps=no_deps)
    if dry_run:
        _run(None, plan, console, dry_run)
        return
    rt = open_runtime(settings, runtime)
    try:
        _run(rt, plan, console, dry_run, settings.results_path)
    finally:
        rt.close()


@task(help={
    "runtime": "docker (the dev container) or host (workbench.python)",
    "arch": "TORCH_CUDA_ARCH_LIST, e.g. '9.0a' (default: the selected GPUs' compute capability)",
    "jobs": "parallel compile jobs (default: from cores and RAM, ~3 GB per nvcc thread)",
    "dry_run": "print the in-container commands and environment, run nothing",
})
def rebuild(c, arch=None, jobs=None, runtime=None, dry_run=False):
    """Incremental rebuild of csrc/ through CMake presets (after a full install), ccache hit stats shown."""
    jobs = flags.integer("--jobs", jobs, minimum=1, maximum=1024, example="8")
    settings = settings_from_context(c)
    fork_state(settings.fork_path).require()
    arch_list, chosen = _arch_and_jobs(settings, arch, jobs)
    if dry_run:
        places, python, _ = plan_places(settings, runtime)
        _run(None, inst.rebuild_plan(places, python, arch_list, chosen), ui.console, dry_run)
        return
    rt = open_runtime(settings, runtime)
    try:
        _run(rt, inst.rebuild_plan(rt.places, rt.python, arch_list, chosen), ui.console, dry_run,
             settings.results_path)
    finally:
        rt.close()


TASKS = [install, rebuild]
