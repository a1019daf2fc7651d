"""The Docker daemon, through the docker SDK: one client per task, the dev container looked up by name.

Each task connects once (``connect``) and passes the client along; the container's name is the one
docker-compose.yml gives it (``compose.load_spec(settings).name``), never a second source.
"""

from __future__ import annotations

import os

from workbench.container import labels
from workbench.errors import WorkbenchError


def host_description() -> str:
    return os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"


def connect(timeout: int = 120):
    """A docker client for the configured daemon, or one line saying how to get one running."""
    import docker
    from docker.errors import DockerException

    try:
        client = docker.from_env(timeout=timeout)
        client.ping()
        return client
    except DockerException as err:
        text = str(err)
        if "Permission denied" in text or "PermissionError" in text:
            raise WorkbenchError(
                f"permission denied on the Docker socket at {host_description()}",
                fix="add your user to the docker group (sudo usermod -aG docker $USER, then log in again)",
            ) from None
        raise WorkbenchError(
            f"no Docker daemon at {host_description()}",
            fix="start Docker (e.g. sudo systemctl start docker) or set DOCKER_HOST to a running daemon",
        ) from None


def find_container(client, name: str):
    """The container of that name, or None."""
    from docker.errors import NotFound

    try:
        return client.containers.get(name)
    except NotFound:
        return None


def require_managed(container, name: str) -> None:
    """Refuse to touch a container the workbench did not create (it may be someone's work)."""
    if (container.labels or {}).get(labels.MANAGED) != "true":
        raise WorkbenchError(
            f"a container named {name} exists that the workbench did not create: remove it (docker rm -f {name}) "
            "or choose another name (container_name in docker-compose.yml, or workbench.container in invoke.yaml)"
        )


def nvidia_runtime_present(info: dict) -> bool:
    """Whether `docker info` lists the NVIDIA runtime (the Container Toolkit is installed)."""
    return "nvidia" in (info.get("Runtimes") or {})
