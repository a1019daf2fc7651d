"""The podman tier: the workbench's docker SDK code against `podman system service`, Podman's Docker-compatible
API (HPC and rootless hosts run Podman rather than Docker)."""

from __future__ import annotations

import subprocess
import time
import uuid

import pytest

from support import project as project_support
from workbench.container import buildkit, images, labels

pytestmark = pytest.mark.podman


@pytest.fixture(scope="module")
def podman_socket(tmp_path_factory):
    """`podman system service` on a socket of its own, for the module; its DOCKER_HOST."""
    folder = tmp_path_factory.mktemp("podman")
    sock = folder / "podman.sock"
    service = subprocess.Popen(["podman", "system", "service", "--time=0", f"unix://{sock}"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not sock.exists():
            if service.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"podman system service did not start: {service.stderr.read()[-2000:]}")
            time.sleep(0.2)
        yield f"unix://{sock}"
    finally:
        service.terminate()
        service.wait(timeout=30)


@pytest.fixture(scope="module")
def podman_client(podman_socket):
    import docker

    client = docker.DockerClient(base_url=podman_socket, timeout=300)
    yield client
    client.close()


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


@pytest.fixture(scope="module")
def podman_base(podman_client):
    """The test base image inside Podman's store (loaded from the tarball tests/ci/build_test_base.sh keeps)."""
    import docker

    ref = project_support.test_base_image()
    try:
        podman_client.images.get(ref)
    except docker.errors.ImageNotFound:
        tarball = project_support.cache_root() / f"test-base-{ref.rsplit(':', 1)[1]}.tar"
        subprocess.run(["podman", "load", "-q", "-i", str(tarball)], check=True, capture_output=True)
    return ref


def test_up_shell_down_against_podman(podman_socket, podman_client, podman_base, tmp_path):
    """`invoke up` creates the compose file's container through Podman's Docker-compatible API, `shell` runs in it
    with the mounts where the file puts them, `down` removes it and its volume; a GPU container is refused in
    one line where Podman cannot resolve the CDI device (never a container that silently has no GPU)."""
    repo, tag = podman_base.rsplit(":", 1)
    proj = project_support.make_project(tmp_path, repo, tag)
    # Rootful Podman gives every container nofile and nproc limits of 1048576 unless asked otherwise (containers.conf
    # defaults do not apply once the request carries ulimits, as the compose file's does); this sandbox refuses
    # those, so its copy of the file asks for limits any host grants. Elsewhere the file is used as it is.
    compose_file = tmp_path / "docker-compose.yml"
    text = compose_file.read_text()
    assert "    stack: 67108864\n" in text
    limits = "    stack: 67108864\n    nofile: 1024\n    nproc: 4096\n"
    compose_file.write_text(text.replace("    stack: 67108864\n", limits, 1))
    env = {"DOCKER_HOST": podman_socket}
    try:
        # Podman takes GPUs as CDI devices; its compat API ignores a DeviceRequest. Where it cannot resolve the
        # name (Podman 4.3 here, and no CDI spec), up says so in one line and leaves nothing behind.
        gpu = proj.invoke("up", "--gpus", "all", env=env)
        assert gpu.returncode != 0
        message = gpu.stderr.strip()
        assert len(message.splitlines()) == 1 and "Traceback" not in message, message
        assert "Podman cannot give this container GPUs" in message and "nvidia.com/gpu=all" in message, message
        assert "nvidia-ctk cdi generate" in message, message
        assert not podman_client.containers.list(all=True, filters={"name": proj.name})

        up = proj.invoke("up", "--gpus", "none", env=env)
        assert up.returncode == 0, up.stdout + up.stderr
        container = podman_client.containers.get(proj.name)
        assert container.status == "running" and container.labels[labels.MANAGED] == "true"
        marker = uuid.uuid4().hex
        shell = proj.invoke("shell", "--cmd", f"echo {marker} > /workspace/results/from-podman; cat /proc/1/comm",
                            env=env)
        assert shell.returncode == 0, shell.stdout + shell.stderr
        assert (tmp_path / "results" / "from-podman").read_text().strip() == marker
        assert shell.stdout.strip() == "podman-init"  # init: true, as the compose file asks (catatonit)

        down = proj.invoke("down", "--volumes", env=env)
        assert down.returncode == 0, down.stdout + down.stderr
        assert not podman_client.containers.list(all=True, filters={"name": proj.name})
        assert not podman_client.volumes.list(filters={"name": proj.name})
    finally:
        for c in podman_client.containers.list(all=True, filters={"name": proj.name}):
            c.remove(force=True)
        for v in podman_client.volumes.list(filters={"name": proj.name}):
            v.remove(force=True)
