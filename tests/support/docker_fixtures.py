"""Fixtures shared by the docker tier (loaded from tests/conftest.py): the daemon client, the dev image
built from Dockerfile.dev on the test base (kept between runs as a cache, tagged by the digest of its
build context), and a throwaway project whose container and volumes are removed afterwards."""

from __future__ import annotations

import contextlib
import re

import pytest

from support import project as project_support

DEV_IMAGE = "wbtest-dev"
# Every image the docker tier keeps between runs is tagged by the build context's digest (the devcontainer
# test's image too, buildkit-<digest> for the BuildKit build): an edit to Dockerfile.dev makes new ones.
CACHED_REPOS = (DEV_IMAGE, "wbtest-issue7-devcontainer")


@pytest.fixture
def grantable_ulimits(monkeypatch):
    """Ask only for the ulimits this daemon may grant (this sandbox: memlock 8 MiB hard)."""
    for key, value in project_support.memlock_env().items():
        monkeypatch.setenv(key, value)


@pytest.fixture(scope="session")
def docker_client():
    import docker

    client = docker.from_env(timeout=300)
    yield client
    client.close()


@pytest.fixture(scope="session")
def dev_tag(docker_client, tmp_path_factory):
    import docker

    from workbench.container import images

    probe = project_support.make_project(tmp_path_factory.mktemp("probe"), DEV_IMAGE, "x")
    tag = project_support.context_digest(probe.settings)
    drop_stale_images(docker_client, tag)
    try:
        docker_client.images.get(f"{DEV_IMAGE}:{tag}")
    except docker.errors.ImageNotFound:
        plan, files = images.plan_build(probe.settings.with_overrides(tag=tag))
        images.build(docker_client, plan, files, on_line=lambda line: None)
    return tag


def drop_stale_images(client, digest: str) -> None:
    """Remove the cached test images of other build contexts, and untagged layers nothing uses: without
    this the daemon's disk grows by a dev image (~1 GB) at every Dockerfile edit until CI runs out of it."""
    import docker

    for repo in CACHED_REPOS:
        for image in client.images.list(name=repo):
            for tag in image.tags:
                # An image still used by a container another run left stays until that container goes.
                if not tag.endswith(digest):
                    with contextlib.suppress(docker.errors.APIError):
                        client.images.remove(tag)
    client.images.prune(filters={"dangling": True})


@pytest.fixture
def project(tmp_path, docker_client, dev_tag, grantable_ulimits):
    proj = project_support.make_project(tmp_path, DEV_IMAGE, dev_tag)
    yield proj
    for c in docker_client.containers.list(all=True, filters={"name": proj.name}):
        c.remove(force=True)
    for img in docker_client.images.list(name=DEV_IMAGE):
        for t in img.tags:
            if t.endswith(f"-{proj.name}"):
                docker_client.images.remove(t, force=True)
    for v in docker_client.volumes.list(filters={"name": proj.name}):
        v.remove(force=True)
    # Compose's project network, where a test ran docker-compose up itself.
    for n in docker_client.networks.list(filters={"label": f"com.docker.compose.project={proj.name}"}):
        n.remove()


def steps_from_cache(lines: list[str], buildkit: bool) -> bool:
    """Whether every RUN step of a build's log came from the layer cache (BuildKit's plain progress, or the
    classic builder's "Step k/N : RUN" followed by "Using cache")."""
    if buildkit:
        runs = {m.group(1) for line in lines if (m := re.match(r"^#(\d+) \[[^\]]*\] RUN ", line))}
        cached = {m.group(1) for line in lines if (m := re.match(r"^#(\d+) CACHED$", line))}
        return bool(runs) and runs <= cached
    runs = [i for i, line in enumerate(lines) if " : RUN " in line]
    return bool(runs) and all("Using cache" in lines[i + 1] for i in runs)
