"""VS Code's "Reopen in Container", for real: the devcontainers CLI (npm @devcontainers/cli, the engine
behind VS Code's Dev Containers) reads .devcontainer/, builds the service from Dockerfile.dev on the local
test base through docker-compose, starts it on this GPU-less daemon, runs the post-create script, and we
check what a user would see inside.

The test base has no torch (the real vllm/vllm-openai image has it), so inside the container verify.py
must report: python ok, no GPU as information (not an error), vllm "not set up yet" with the fix and
custom_kernels "not set up yet"; after an editable install of the (stand-in) fork, vllm ok. torch is
reported broken there, which is the truth about the test base.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import docker
import pytest

from support.project import (
    ROOT,
    TEST_GID,
    TEST_UID,
    context_digest,
    extra_ca_dir,
    make_project,
    memlock_env,
)
from support.project import test_base_image as base_image  # renamed: pytest would collect test_*

pytestmark = pytest.mark.docker

# docker-compose (driven by the CLI) builds Dockerfile.dev itself: ~1.5 min the first time on the CI machine,
# seconds afterwards. The image is kept between runs as that build's cache, like the docker tier's dev image.
IMAGE = "wbtest-issue7-devcontainer"
CLI_VERSION = "0.89.0"  # the version this test was written against


def _cache() -> Path:
    default = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "vllm-workbench"
    return Path(os.environ.get("WORKBENCH_CACHE") or default)


@pytest.fixture(scope="session")
def devcontainer_cli() -> str:
    """The devcontainers CLI, installed once with npm under $WORKBENCH_CACHE/npm."""
    prefix = _cache() / "npm"
    cli = prefix / "node_modules" / ".bin" / "devcontainer"
    if not cli.exists():
        npm = shutil.which("npm")
        if not npm:
            pytest.fail("npm is missing: apt-get install -y npm (tests/run.sh installs it)")
        prefix.mkdir(parents=True, exist_ok=True)
        subprocess.run([npm, "install", "--no-audit", "--no-fund", "--prefix", str(prefix),
                        f"@devcontainers/cli@{CLI_VERSION}"], check=True, capture_output=True, timeout=600)
    return str(cli)


@pytest.fixture
def workspace(tmp_path):
    """A throwaway workbench checkout: the real compose file, Dockerfile.dev, .devcontainer/, custom_kernels/,
    scripts/debug/ and .vscode/; a stand-in fork that pip can install editable; unique resource names."""
    proj = make_project(tmp_path, IMAGE, "x")
    for item in (".devcontainer", ".vscode"):
        shutil.copytree(ROOT / item, tmp_path / item)
    shutil.rmtree(tmp_path / "custom_kernels")
    shutil.copytree(ROOT / "custom_kernels", tmp_path / "custom_kernels",
                    ignore=shutil.ignore_patterns("*.egg-info", "__pycache__"))
    shutil.copytree(ROOT / "scripts" / "debug", tmp_path / "scripts" / "debug")
    (tmp_path / "vllm" / "setup.py").write_text("from setuptools import setup\n\nsetup(name='vllm', version='0.0.0', "
                                                "packages=['vllm'])\n")
    # The CLI builds with docker-compose: extra CAs go where Dockerfile.dev takes them from (TLS interception).
    ca = extra_ca_dir()
    if ca:
        for cert in Path(ca).glob("*.crt"):
            shutil.copy2(cert, tmp_path / "docker" / "ca-certificates" / cert.name)
    # The checkout belongs to the host user, who is the container's `dev` (it reads the mounted checkout,
    # post-create links .vscode/ into the fork, pip install -e writes metadata there).
    subprocess.run(["chown", "-R", f"{TEST_UID}:{TEST_GID}", str(tmp_path)], check=True)
    project = tmp_path.name.lower()
    env = {**os.environ, **memlock_env(),
           "WORKBENCH_IMAGE": f"{IMAGE}:{context_digest(proj.settings)}",
           "WORKBENCH_CONTAINER": proj.name, "WORKBENCH_CCACHE_VOLUME": f"{proj.name}-ccache",
           "HF_HOME": str(tmp_path / "hf"), "WORKBENCH_UID": str(TEST_UID), "WORKBENCH_GID": str(TEST_GID),
           "WORKBENCH_BASE_IMAGE": base_image()}
    yield tmp_path, env, proj.name
    client = docker.from_env(timeout=120)
    try:
        label = {"label": f"com.docker.compose.project={project}"}
        for c in client.containers.list(all=True, filters=label):
            c.remove(force=True)
        for c in client.containers.list(all=True, filters={"name": proj.name}):
            c.remove(force=True)
        for n in client.networks.list(filters=label):
            n.remove()
        for v in client.volumes.list(filters={"name": proj.name}):
            v.remove(force=True)
        # The CLI tags a per-workspace image for its remote-user UID update: vsc-<project>-<hash>-uid.
        for tag in [t for img in client.images.list() for t in img.tags if t.startswith(f"vsc-{project}-")]:
            client.images.remove(tag, noprune=False)
    finally:
        client.close()


def _cli(cli: str, workspace: Path, env: dict, config: str, command: str, *args: str, timeout: int = 900):
    """`devcontainer COMMAND --workspace-folder W --config C ARGS...` (for exec, ARGS is the command to run)."""
    cmd = [cli, command, "--workspace-folder", str(workspace), "--config", str(workspace / config), *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)


def _outcome(proc: subprocess.CompletedProcess) -> dict:
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith('{"outcome"')]
    assert lines, f"no outcome from the devcontainer CLI:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return json.loads(lines[-1])


def test_reopen_in_container_on_a_gpu_less_host(devcontainer_cli, workspace):
    ws, env, name = workspace
    config = ".devcontainer/cpu/devcontainer.json"
    up = _cli(devcontainer_cli, ws, env, config, "up")
    result = _outcome(up)
    assert result["outcome"] == "success", f"{result}\n{up.stderr[-4000:]}"
    assert result["remoteUser"] == "dev" and result["remoteWorkspaceFolder"] == "/workspace/vllm"
    log = up.stderr + up.stdout
    # post-create ran: debug configurations linked into the fork, the checks printed.
    assert "workbench dev container:" in log and "debug configurations:" in log
    assert (ws / "vllm" / ".vscode" / "launch.json").is_symlink()

    def verify() -> dict:
        proc = _cli(devcontainer_cli, ws, env, config, "exec", "python",
                    "/workspace/workbench/.devcontainer/verify.py", "--json", timeout=300)
        start = proc.stdout.find("[")
        assert start >= 0, f"verify.py printed no JSON (exit {proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
        return {c["name"]: c for c in json.loads(proc.stdout[start:])}

    checks = verify()
    assert checks["python"]["status"] == "ok" and "/opt/workbench-venv" in checks["python"]["detail"]
    assert checks["cuda"]["status"] == "info" and "no GPU visible" in checks["cuda"]["detail"]
    assert checks["vllm"]["status"] == "pending" and checks["vllm"]["fix"] == "invoke install --precompiled"
    assert checks["custom_kernels"]["status"] == "pending"
    assert checks["torch"]["status"] == "broken"  # the test base has no torch; vllm/vllm-openai does

    # The container is the one docker-compose.yml declares: user, mounts, working directory.
    client = docker.from_env(timeout=60)
    try:
        container = client.containers.get(name)
        mounts = {m["Destination"] for m in container.attrs["Mounts"]}
        assert {"/workspace/vllm", "/workspace/custom_kernels", "/workspace/scripts", "/workspace/results",
                "/cache/huggingface", "/cache/ccache", "/workspace/workbench"} <= mounts
        assert container.attrs["HostConfig"]["DeviceRequests"] in (None, [])
        assert container.attrs["Config"]["WorkingDir"] == "/workspace/vllm"
        host = container.attrs["HostConfig"]
        assert host["IpcMode"] == "host" and host["Init"] is True
        inside = dict(e.split("=", 1) for e in container.attrs["Config"]["Env"])
        assert inside["HF_HOME"] == "/cache/huggingface" and inside["CCACHE_DIR"] == "/cache/ccache"
        assert inside.get("VLLM_WORKBENCH") == "1"
        assert not {"HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"} & set(inside)  # secrets never in the create config
    finally:
        client.close()

    # Installing the fork editable (what `invoke install` does, here with the stand-in fork) turns vllm ok.
    install = _cli(devcontainer_cli, ws, env, config, "exec", "python", "-m", "pip", "install", "-q", "--no-deps",
                   "--no-build-isolation", "--no-index", "-e", "/workspace/vllm", timeout=300)
    assert install.returncode == 0, install.stdout[-2000:] + install.stderr[-2000:]
    after = verify()
    assert after["vllm"]["status"] == "ok" and "editable from /workspace/vllm" in after["vllm"]["detail"]


def test_reopen_makes_the_missing_host_folders_as_the_user(devcontainer_cli, workspace):
    """initializeCommand creates the missing bind sources on the host before Compose runs. They belong to the
    user who opened the folder; as root (CI), to the checkout's owner, the container's `dev` (TEST_UID), so
    this fails if dockerd made them (root's) or a plain mkdir as root did."""
    ws, env, _ = workspace
    folders = [ws / "results", ws / "wheels", ws / "hf"]
    for folder in folders:
        shutil.rmtree(folder, ignore_errors=True)
    owner = (TEST_UID, TEST_GID) if os.geteuid() == 0 else (os.getuid(), os.getgid())
    config = ".devcontainer/cpu/devcontainer.json"
    up = _cli(devcontainer_cli, ws, env, config, "up")
    result = _outcome(up)
    assert result["outcome"] == "success", f"{result}\n{up.stderr[-4000:]}"
    for folder in folders:
        assert folder.is_dir() and (folder.stat().st_uid, folder.stat().st_gid) == owner, folder
    assert f"host folder created: {ws / 'wheels'} (owner {owner[0]}:{owner[1]})" in up.stdout + up.stderr
    # What the ownership is for: the container's user writes results where a root-owned folder would refuse.
    wrote = _cli(devcontainer_cli, ws, env, config, "exec", "touch", "/workspace/results/written-by-dev", timeout=120)
    assert wrote.returncode == 0, wrote.stdout + wrote.stderr
    assert (ws / "results" / "written-by-dev").stat().st_uid == TEST_UID


def test_hf_token_reaches_exec_from_its_environment_not_the_container(devcontainer_cli, workspace):
    """remoteEnv: `devcontainer exec` gets the HF_TOKEN of its own environment (not the one `up` had), and
    neither value is anywhere in the container's or its image's config (env, labels)."""
    ws, env, name = workspace
    config = ".devcontainer/cpu/devcontainer.json"
    up_token, exec_token = "hf_at_up_time_0123456789", "hf_at_exec_time_9876543210"
    up = _cli(devcontainer_cli, ws, {**env, "HF_TOKEN": up_token}, config, "up")
    result = _outcome(up)
    assert result["outcome"] == "success", f"{result}\n{up.stderr[-4000:]}"
    printed = _cli(devcontainer_cli, ws, {**env, "HF_TOKEN": exec_token}, config, "exec", "printenv", "HF_TOKEN",
                   timeout=120)
    assert printed.returncode == 0 and printed.stdout.strip() == exec_token, printed.stdout + printed.stderr
    client = docker.from_env(timeout=60)
    try:
        container = client.containers.get(name)
        inside = dict(e.split("=", 1) for e in container.attrs["Config"]["Env"])
        assert not {"HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"} & set(inside)
        described = json.dumps(container.attrs) + json.dumps(client.images.get(container.attrs["Image"]).attrs)
        assert up_token not in described and exec_token not in described  # labels too: docker commit keeps them
    finally:
        client.close()


def test_gpu_configuration_fails_without_the_nvidia_runtime(devcontainer_cli, workspace):
    """Why the CPU configuration exists: service `dev` reserves GPUs, which a host without the NVIDIA
    runtime cannot start (the documented error, not a hang or a half-working container)."""
    client = docker.from_env(timeout=30)
    try:
        if "nvidia" in client.info().get("Runtimes", {}):
            pytest.skip("this daemon has the NVIDIA runtime: the GPU configuration would start")
    finally:
        client.close()
    ws, env, name = workspace
    up = _cli(devcontainer_cli, ws, env, ".devcontainer/devcontainer.json", "up")
    assert _outcome(up)["outcome"] == "error"
    # The CLI reports only "An error occurred starting Docker Compose up"; the daemon keeps the reason.
    client = docker.from_env(timeout=30)
    try:
        container = client.containers.get(name)
        assert container.status == "created"
        requests = container.attrs["HostConfig"]["DeviceRequests"]
        assert requests and requests[0]["Capabilities"] == [["gpu"]]
        assert "could not select device driver" in container.attrs["State"]["Error"]
    finally:
        client.close()
