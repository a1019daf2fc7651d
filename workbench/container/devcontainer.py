"""The dev container as the place steps run: the ``DevContainer`` runtime, and `invoke shell`.

The compose spec, the container and the client are resolved once per ``DevContainer``; each step is
one exec on them. Secrets reach the container only here, at exec time, never its create config.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

from workbench.config import Settings
from workbench.container import compose, lifecycle
from workbench.container.daemon import connect, find_container, require_managed
from workbench.container.places import MountMap, container_places
from workbench.errors import WorkbenchError
from workbench.runtime import Execution, Runtime


def secret_environment(settings: Settings, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The secrets set on the host, to pass to one exec (never to the container's create config)."""
    environ = os.environ if environ is None else environ
    return {name: environ[name] for name in settings.secrets if environ.get(name)}


def running_container(client, settings: Settings, spec: compose.ContainerSpec, gpus: str | None = None,
                      start: bool = True):
    """The container the spec names, started (via `up`, for the same ``gpus``) when it is not running."""
    container = find_container(client, spec.name)
    if container is not None:
        require_managed(container, spec.name)
        if container.status == "running":
            return container
    if not start:
        raise WorkbenchError(f"container {spec.name} is not running: run `invoke up`")
    return client.containers.get(lifecycle.up(client, settings, gpus=gpus).container_id)


class DevContainer(Runtime):
    """The dev container as a runtime: name, spec and connection resolved once, each step one exec."""

    name = "docker"
    python = "python"  # the image's venv python (/opt/workbench-venv/bin is first on PATH)

    def __init__(self, settings: Settings, client, container, spec: compose.ContainerSpec):
        self.settings = settings
        self.client = client
        self.container = container
        self.spec = spec
        self.places = container_places(settings, spec)
        self.mounts = MountMap.of(spec)

    @classmethod
    def open(cls, settings: Settings, gpus: str | None = None, client=None, start: bool = True) -> DevContainer:
        """Connect, read the compose file, and find (or start, via `up`) the container it names."""
        client = client or connect()
        spec = compose.load_spec(settings, gpus)
        return cls(settings, client, running_container(client, settings, spec, gpus, start=start), spec)

    def execute(self, argv: Sequence[str], env: Mapping[str, str] | None = None,
                cwd: str | None = None) -> Execution:
        api = self.client.api
        environment = {**secret_environment(self.settings), **(env or {})}
        exec_id = api.exec_create(self.container.id, list(argv), environment=environment or None, workdir=cwd,
                                  stdout=True, stderr=True)["Id"]

        def chunks() -> Iterator[tuple[str, bytes]]:
            for stdout, stderr in api.exec_start(exec_id, stream=True, demux=True):
                if stdout:
                    yield "stdout", stdout
                if stderr:
                    yield "stderr", stderr

        return Execution(chunks(), lambda: int(api.exec_inspect(exec_id)["ExitCode"]))

    def to_host(self, path: str) -> Path:
        return self.mounts.to_host(path)

    def from_host(self, path: Path) -> str | None:
        return self.mounts.from_host(path)

    def describe(self) -> str:
        return f"dev container {self.container.name}"

    def close(self) -> None:
        self.client.close()


def exec_in_container(settings: Settings, cmd: list[str], env: dict[str, str] | None = None,
                      workdir: str | None = None, client=None,
                      out: Callable[[bytes], object] | None = None,
                      err: Callable[[bytes], object] | None = None) -> int:
    """Run ``cmd`` in the dev container (starting it if needed), streaming its output; the exit code."""
    return DevContainer.open(settings, client=client).run(cmd, env, workdir, out=out, err=err)


def interactive_command(settings: Settings, container_name: str, cmd: str | None) -> list[str]:
    """The `docker exec -it` command line for an interactive shell; secrets by name only (`-e NAME`
    takes the value from our environment, so it never appears in a process list)."""
    docker_cli = shutil.which("docker")
    if docker_cli is None:
        raise WorkbenchError("the docker CLI is not installed: an interactive shell needs it (apt install docker.io)")
    args = [docker_cli, "exec", "-i"]
    if sys.stdin.isatty() and sys.stdout.isatty():
        args.append("-t")
    for name in secret_environment(settings):
        args += ["-e", name]
    args.append(container_name)
    args += ["bash", "-lc", cmd] if cmd else ["bash", "-l"]
    return args


def shell(settings: Settings, cmd: str | None = None, interactive: bool | None = None) -> int:
    """An interactive shell (docker CLI, needs a TTY) or one command (SDK); returns its exit code."""
    dev = DevContainer.open(settings)
    try:
        if interactive is None:
            interactive = cmd is None
        if interactive:
            return subprocess.call(interactive_command(settings, dev.container.name, cmd))
        return dev.run(["bash", "-lc", cmd or "true"])
    finally:
        dev.close()
