"""The podman tier: the workbench's docker SDK code against `podman system service`, Podman's Docker-compatible
API (HPC and rootless hosts run Podman rather than Docker)."""

from __future__ import annotations

import subprocess
import time
import uuid

import pytest

from workbench.container import buildkit, images, labels

pytestmark = pytest.mark.podman


@pytest.fixture(scope="module")
def podman_client(tmp_path_factory):
    import docker

    sock = tmp_path_factory.mktemp("podman") / "podman.sock"
    service = subprocess.Popen(["podman", "system", "service", "--time=0", f"unix://{sock}"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not sock.exists():
            if service.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"podman system service did not start: {service.stderr.read()[-2000:]}")
            time.sleep(0.2)
        client = docker.DockerClient(base_url=f"unix://{sock}", timeout=300)
        yield client
        client.close()
    finally:
        service.terminate()
        service.wait(timeout=30)


def test_a_buildkit_plan_builds_through_podmans_own_endpoint(podman_client):
    """BuildKit through the docker CLI needs Docker's engine; against Podman the build takes the daemon's
    build endpoint (buildah) with the classic copy of the Dockerfile, labels and all."""
    assert images.daemon_engine(podman_client) == "Podman Engine"
    tag = f"localhost/wbtest-podman:{uuid.uuid4().hex[:8]}"
    dockerfile = f"FROM scratch\nCOPY x /x\nLABEL {labels.ROLE}={labels.ROLE_DEV}\n"
    files = {images.DOCKERFILE: dockerfile.encode(), "x": b"hi\n"}
    builder = buildkit.find_builder() or buildkit.Builder(("docker", "build"), (("DOCKER_BUILDKIT", "1"),))
    plan = images.BuildPlan(tag, "scratch", {}, tuple(files), False, "test", labels.oci("t", "d", "0", "scratch"),
                            builder)
    lines: list[str] = []
    image_id = images.build(podman_client, plan, files, on_line=lines.append)
    try:
        assert any("the daemon is Podman Engine, not Docker's engine" in line for line in lines), lines
        made = podman_client.images.get(tag)
        assert image_id.split(":")[-1] in made.id
        assert made.labels[labels.OCI_TITLE] == "t" and made.labels[labels.ROLE] == labels.ROLE_DEV
    finally:
        podman_client.images.remove(tag, force=True)
