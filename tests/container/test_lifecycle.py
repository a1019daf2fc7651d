"""The dev image and container on a real Docker daemon: build, up, shell, commit, up-from-committed,
down, file ownership, secrets, drift, the GPU-request failure of a host without the NVIDIA runtime,
concurrent `up`, and the errors a user meets. Built on the local test base (no registry here)."""

from __future__ import annotations

import io
import json
import os
import subprocess
import tarfile
import threading

import docker
import pytest

from support.docker_fixtures import DEV_IMAGE as IMAGE
from support.docker_fixtures import steps_from_cache
from support.project import TEST_UID, git
from workbench.container import compose, daemon, labels, lifecycle
from workbench.container.places import container_places
from workbench.errors import WorkbenchError

pytestmark = pytest.mark.docker



@pytest.fixture
def client(docker_client):
    return docker_client


@pytest.fixture(autouse=True)
def _ulimits(grantable_ulimits):
    """Engine-level tests create containers outside `project.invoke` too."""


def test_image_contents(client, dev_tag):
    out = client.containers.run(f"{IMAGE}:{dev_tag}", [
        "bash", "-c",
        "id -u; id -g; python -c 'import importlib.util as u; print(u.find_spec(\"vllm\") is None)'; "
        "python -c 'import vllm_stub_dependency; print(\"dep kept\")'; echo $VIRTUAL_ENV $CCACHE_DIR; "
        "command -v ccache gdb cmake ninja git g++ pytest | wc -l; touch $VIRTUAL_ENV/writable && echo venv ok; "
        "sudo -n true && echo sudo ok; "
        "pth=$(python -c 'import sysconfig; print(sysconfig.get_paths()[\"purelib\"])')/workbench-src.pth; "
        "tr '\\n' ' ' < $pth; echo"],  # end on a newline: a partial last line can miss the log stream
        remove=True).decode().split("\n")
    assert out[:2] == [str(TEST_UID), str(TEST_UID)]
    assert out[2] == "True", "the preinstalled non-editable vllm must be gone"
    assert out[3] == "dep kept", "vllm's dependencies must stay"
    assert out[4] == "/opt/workbench-venv /cache/ccache"
    assert out[5] == "7" and out[6] == "venv ok" and out[7] == "sudo ok"
    assert out[8].split() == ["/opt/workbench-src", "/workspace/custom_kernels/src"]  # the package's import root
    built = client.images.get(f"{IMAGE}:{dev_tag}").labels
    assert built[labels.ROLE] == labels.ROLE_DEV and built[labels.UID] == str(TEST_UID)
    assert built[labels.BASE_IMAGE].startswith("workbench-test-base:")


def test_no_change_build_hits_the_cache(project):
    from workbench.container.buildkit import find_builder

    result = project.invoke("build", check=True)
    assert steps_from_cache(result.stdout.splitlines(), find_builder() is not None), result.stdout[-3000:]
    assert "built " in result.stdout


def test_up_shell_reuse_ownership_down(project, client):
    first = project.invoke("up", check=True)
    assert "created container" in first.stdout and "no committed image yet" in first.stdout
    container = client.containers.get(project.name)
    attrs = container.attrs
    assert attrs["HostConfig"]["Init"] is True and attrs["HostConfig"]["IpcMode"] == "host"
    mounts = {m["Destination"]: m for m in attrs["Mounts"]}
    assert mounts["/workspace/vllm"]["Source"] == str(project.root / "vllm")
    assert mounts["/cache/ccache"]["Name"] == f"{project.name}-ccache"
    assert "reused container" in project.invoke("up", check=True).stdout
    assert client.containers.get(project.name).id == container.id

    lib = project.invoke("shell", "--cmd", "python -c 'import workbench.trace; print(workbench.__file__)'")
    assert lib.stdout.strip() == "/opt/workbench-src/workbench/__init__.py", lib.stderr
    shell = project.invoke("shell", "--cmd", "touch /workspace/results/made-inside; echo hello-from-$(id -u); exit 7")
    assert shell.returncode == 7 and f"hello-from-{TEST_UID}" in shell.stdout
    made = project.root / "results" / "made-inside"
    assert (made.stat().st_uid, made.stat().st_gid) == (TEST_UID, TEST_UID)

    down = project.invoke("down", check=True)
    assert "kept volume(s)" in down.stdout
    assert client.volumes.get(f"{project.name}-ccache")  # survives a plain down
    assert made.exists(), "down never touches host folders"
    project.invoke("down", "--volumes", check=True)
    with pytest.raises(docker.errors.NotFound):
        client.volumes.get(f"{project.name}-ccache")


def test_secret_reaches_exec_but_never_the_image(project, client):
    token = "hf_TEST-not-a-real-token-0123456789"  # shaped like a token, matches no real one
    env = {"HF_TOKEN": token}
    assert project.invoke("up", env=env, check=True)
    probe = project.invoke("shell", "--cmd", f'test "$HF_TOKEN" = "{token}" && echo token-visible', env=env)
    assert probe.returncode == 0 and "token-visible" in probe.stdout
    container = client.containers.get(project.name)
    assert token not in json.dumps(container.attrs)
    committed = project.invoke("commit", "--tag", f"c-{project.name}", env=env, check=True)
    assert f"{IMAGE}:c-{project.name}" in committed.stdout
    image = client.images.get(f"{IMAGE}:c-{project.name}")
    assert token not in json.dumps(image.attrs) and token not in json.dumps(image.history())
    top_layer = _top_layer_bytes(image)
    assert token.encode() not in top_layer


def _top_layer_bytes(image) -> bytes:
    raw = b"".join(image.save(named=False))
    with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
        manifest = json.load(tar.extractfile("manifest.json"))
        return tar.extractfile(manifest[0]["Layers"][-1]).read()


def test_commit_labels_and_up_prefers_the_matching_committed_image(project, client):
    project.invoke("up", check=True)
    install = json.dumps({"mode": "precompiled", "wheel": "vllm-0.13.0.whl", "arch_list": "9.0a"})
    settings = project.settings
    record = container_places(settings, compose.load_spec(settings)).install_record  # where install writes it
    project.invoke("shell", "--cmd", f"echo '{install}' > {record}", check=True)
    head = git(project.root / "vllm", "rev-parse", "HEAD")
    out = project.invoke("commit", "--tag", f"dev-compiled-{project.name}", check=True).stdout
    ref = f"{IMAGE}:dev-compiled-{project.name}"
    made = client.images.get(ref).labels
    assert made[labels.VLLM_COMMIT] == head and made[labels.INSTALL_MODE] == "precompiled"
    assert made[labels.CUDA_ARCH_LIST] == "9.0a" and made[labels.VLLM_DIRTY] == "false"
    assert made[labels.ROLE] == labels.ROLE_COMPILED and labels.COMMITTED_AT in made and ref in out

    project.invoke("down", check=True)
    again = project.invoke("up", check=True).stdout
    assert f"from image {ref}" in again and "matches the fork" in again

    project.commit_fork("a new commit in the fork")
    stale = project.invoke("up", check=True).stdout
    assert "recreated container" in stale and "no committed image matches the fork" in stale
    assert client.containers.get(project.name).image.tags[0].startswith(f"{IMAGE}:")
    status = project.invoke("status", check=True).stdout
    assert "committed images" in status and head[:12] in status


def test_drift_recreates_but_never_discards_work(project, client):
    project.invoke("up", check=True)
    cid = client.containers.get(project.name).id
    compose = project.root / "docker-compose.yml"
    compose.write_text(compose.read_text().replace('VLLM_WORKBENCH: "1"', 'VLLM_WORKBENCH: "2"'))
    assert "recreated container" in project.invoke("up", check=True).stdout
    assert client.containers.get(project.name).id != cid

    project.invoke("shell", "--cmd", "mkdir -p ~/notes && echo mine > ~/notes/todo.txt", check=True)
    compose.write_text(compose.read_text().replace('VLLM_WORKBENCH: "2"', 'VLLM_WORKBENCH: "3"'))
    refused = project.invoke("up")
    assert refused.returncode == 1 and "holds" in refused.stderr and "invoke commit" in refused.stderr
    assert "Traceback" not in refused.stderr and len(refused.stderr.strip().splitlines()) == 1
    assert "mine" in project.invoke("shell", "--cmd", "cat ~/notes/todo.txt", check=True).stdout
    assert "recreated container" in project.invoke("up", "--recreate", check=True).stdout


def test_gpu_request_without_nvidia_runtime_fails_cleanly(project, client):
    if daemon.nvidia_runtime_present(client.info()):
        pytest.skip("this daemon has the NVIDIA runtime: the failure cannot happen here")
    result = project.invoke("up", "--gpus", "all")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "NVIDIA Container Toolkit" in result.stderr and "--gpus none" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert client.containers.list(all=True, filters={"name": project.name}) == [], "no orphan container"


def test_concurrent_up_yields_one_container(project, client):
    results = []

    def run():
        results.append(project.invoke("up"))

    threads = [threading.Thread(target=run) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [r.returncode for r in results] == [0, 0, 0], [r.stderr for r in results]
    assert len(client.containers.list(all=True, filters={"name": project.name})) == 1
    actions = sorted(r.stdout.split()[0] for r in results)
    assert actions == ["created", "reused", "reused"]


def test_engine_level_concurrent_up_without_lock_relies_on_name_conflict(project, client, monkeypatch):
    """Two hosts sharing a daemon do not share our file lock: the daemon's 409 must still give one container."""
    from contextlib import nullcontext

    monkeypatch.setattr(lifecycle, "_up_lock", lambda name: nullcontext())
    settings = project.settings
    errors, results = [], []

    def run():
        try:
            results.append(lifecycle.up(daemon.connect(), settings))  # a client each, as separate hosts
        except Exception as err:  # collected and asserted below
            errors.append(err)

    threads = [threading.Thread(target=run) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert len({r.container_id for r in results}) == 1


def test_user_errors_are_one_line(project, client):
    cases = {}
    cases["foreign"] = None
    client.containers.create(project.settings.image_ref, ["sleep", "1"], name=project.name)
    cases["foreign"] = project.invoke("up")
    client.containers.get(project.name).remove(force=True)
    cases["bad gpus"] = project.invoke("up", "--gpus", "abc")
    cases["no image"] = project.invoke("up", env={"INVOKE_WORKBENCH_TAG": "does-not-exist"})
    os.rename(project.root / "vllm", project.root / "vllm-away")
    cases["no fork"] = project.invoke("up")
    os.rename(project.root / "vllm-away", project.root / "vllm")
    cases["no daemon"] = project.invoke("status", env={"DOCKER_HOST": "unix:///nonexistent.sock"})
    cases["no base image"] = project.invoke("build", "--base-image", "nosuch/base:1", "--tag", f"x-{project.name}")
    expected = {
        "foreign": "did not create: remove it",
        "bad gpus": "use all, none, or GPU indices",
        "no image": "run `invoke build` first",
        "no fork": "set workbench.fork",  # the project is no git repo: no submodule to initialise
        "no daemon": "start Docker",
        "no base image": "--base-image",
    }
    for case, result in cases.items():
        assert result.returncode != 0, case
        assert "Traceback" not in result.stderr, (case, result.stderr)
        assert result.stderr.strip().splitlines()[-1].startswith("error: "), (case, result.stderr)
        assert expected[case] in result.stderr.strip().splitlines()[-1], (case, result.stderr)
    assert client.containers.list(all=True, filters={"name": project.name}) == []


def test_docker_compose_and_invoke_up_create_the_same_container(project, client):
    """One declaration: Compose itself and `invoke up` make equivalent containers from the file."""
    settings = project.settings
    from workbench.container.compose import compose_variables

    env = {**os.environ, **compose_variables(settings), "WORKBENCH_CONTAINER": f"{project.name}-compose"}
    subprocess.run(["docker-compose", "-p", project.name, "--profile", "cpu", "up", "-d", "--no-build", "dev-cpu"],
                   cwd=project.root, env=env, check=True, capture_output=True)
    project.invoke("up", check=True)
    theirs = client.containers.get(f"{project.name}-compose").attrs
    ours = client.containers.get(project.name).attrs
    try:
        def view(a):
            hc, cfg = a["HostConfig"], a["Config"]
            mounts = sorted((m["Type"], m.get("Name") or m["Source"], m["Destination"], m["RW"]) for m in a["Mounts"])
            env_ = sorted(e for e in cfg["Env"])
            return {"mounts": mounts, "env": env_, "ipc": hc["IpcMode"], "init": hc["Init"], "cmd": cfg["Cmd"],
                    "ulimits": sorted((u["Name"], u["Soft"], u["Hard"]) for u in hc["Ulimits"] or []),
                    "workdir": cfg["WorkingDir"], "image": cfg["Image"], "user": cfg["User"],
                    "gpus": hc.get("DeviceRequests")}
        assert view(ours) == view(theirs)
    finally:
        client.containers.get(f"{project.name}-compose").remove(force=True)


def test_the_classic_builder_builds_the_same_dockerfile(project, client):
    """Where BuildKit is missing, invoke build falls back to the daemon's classic builder: the same Dockerfile
    without its cache mounts, nothing of apt's or pip's caches left in the image."""
    from workbench.container import images

    settings = project.settings.with_overrides(builder="classic", tag=f"classic-{project.name}")
    plan, files = images.plan_build(settings)
    assert plan.builder is None
    images.build(client, plan, files, on_line=lambda line: None)
    out = client.containers.run(plan.tag, ["sh", "-c", "id -u; ls /var/lib/apt/lists | grep -c _Packages; "
                                           "test -e /tmp/pip-cache && echo pip-cache || echo none"],
                                remove=True).decode().split()
    assert out == [str(TEST_UID), "0", "none"]


def test_engine_raises_workbench_error_for_missing_image(project, client):
    settings = project.settings.with_overrides(tag="nope")
    with pytest.raises(WorkbenchError, match="run `invoke build` first"):
        lifecycle.up(client, settings)


def test_commit_then_up_keeps_the_container_and_status_shows_the_commit(project, client):
    """Right after `invoke commit`, `up` keeps the container the image was committed from (its work is in
    that image: no second commit) and `status` names the commit; a new container starts from it."""
    project.invoke("up", check=True)
    project.invoke("shell", "--cmd", "mkdir -p ~/work && echo built > ~/work/artifact", check=True)
    cid = client.containers.get(project.name).id
    ref = f"{IMAGE}:dev-compiled-{project.name}"
    project.invoke("commit", "--tag", f"dev-compiled-{project.name}", check=True)
    assert client.images.get(ref).labels[labels.COMMITTED_FROM] == cid
    status = project.invoke("status", check=True).stdout
    assert f"committed as {ref} at " in status, status
    assert "no committed image yet" not in status and "differs from docker-compose.yml" not in status
    data = json.loads(project.invoke("status", "--json", check=True).stdout)  # the same facts, as one document
    mine = data["container"]
    assert (mine["name"], mine["drift"], data["container_name"]) == (project.name, "", project.name)
    assert mine["committed_as"].startswith(f"{ref} at ") and mine["status"] == "running"
    assert any(c["ref"] == ref and c["labels"][labels.COMMITTED_FROM] == cid for c in data["committed"])
    assert data["dev_image"]["ref"] and isinstance(data["nvidia_runtime"], bool)
    again = project.invoke("up")
    assert again.returncode == 0, again.stderr
    assert "reused container" in again.stdout and "was committed from this container" in again.stdout
    assert client.containers.get(project.name).id == cid
    project.invoke("down", check=True)
    fresh = project.invoke("up", check=True).stdout
    assert f"from image {ref}" in fresh and "matches the fork" in fresh
    assert "built" in project.invoke("shell", "--cmd", "cat ~/work/artifact", check=True).stdout


def test_a_tag_never_starts_from_another_tags_commit(project, client):
    project.invoke("up", check=True)
    project.invoke("commit", "--tag", f"dev-compiled-{project.name}", check=True)
    project.invoke("down", check=True)
    other = project.invoke("up", env={"INVOKE_WORKBENCH_TAG": f"nope-{project.name}"})
    assert other.returncode == 1 and "Traceback" not in other.stderr
    line = other.stderr.strip().splitlines()
    assert len(line) == 1 and line[0].startswith(f"error: image {IMAGE}:nope-{project.name} not found: run "
                                                 "`invoke build` first")
    assert "INVOKE_WORKBENCH_TAG" in line[0]
    assert client.containers.list(all=True, filters={"name": project.name}) == []
