"""Choosing where a task's steps run: this host (workbench.runtime) or the dev container (the container
wing). It sits with the tasks, above both, so the runtime seam itself imports no wing."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from workbench.config import Settings
from workbench.runtime import HostRuntime, Places, Runtime, host_places, host_python, runtime_name

# The container wing is imported when a task asks for the container: every task module imports this one, and
# `invoke shell` or `invoke --list` should not pay for the docker SDK and the lifecycle code they don't use.


def plan_places(settings: Settings, flag: str | None = None) -> tuple[Places, str, str]:
    """(places, python, description) of the runtime, without connecting to it: what --dry-run prints."""
    if runtime_name(settings, flag) == "host":
        python = host_python(settings)
        return host_places(settings, python), python, f"this host ({python})"
    from workbench.container import compose
    from workbench.container.devcontainer import DevContainer
    from workbench.container.places import container_places

    spec = compose.load_spec(settings)
    return container_places(settings, spec), DevContainer.python, f"dev container {spec.name}"


def path_mapper(settings: Settings, flag: str | None = None) -> Callable[[Path], str | None]:
    """How the runtime names a host path (None: it cannot see it), without connecting: --dry-run's view."""
    if runtime_name(settings, flag) == "host":
        return lambda path: str(Path(path).absolute())
    from workbench.container import compose
    from workbench.container.places import MountMap

    return MountMap.of(compose.load_spec(settings)).from_host


def open_runtime(settings: Settings, flag: str | None = None, gpus: str | None = None) -> Runtime:
    """The runtime the settings (or --runtime) name, ready to run steps."""
    if runtime_name(settings, flag) == "host":
        return HostRuntime(settings)
    from workbench.container.devcontainer import DevContainer

    return DevContainer.open(settings, gpus=gpus)
