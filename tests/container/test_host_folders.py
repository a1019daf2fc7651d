"""The devcontainer's initializeCommand, run as each configuration writes it, on a bare host python3: it
creates every host folder the compose files bind (the same ones `invoke up` mounts), as the user running
it, and leaves existing folders alone."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from workbench.config import Settings
from workbench.container import compose, host_folders
from workbench.errors import WorkbenchError

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = (".devcontainer/devcontainer.json", ".devcontainer/cpu/devcontainer.json")
OTHER_UID = 4242  # not root: when the tests run as root, the command runs as this user
BARE_PATH = "/usr/bin:/bin"  # the system python3: no venv, no workbench installed


def _config(rel: str) -> dict:
    path = ROOT / rel
    return json.loads("\n".join(ln for ln in path.read_text().splitlines() if not ln.lstrip().startswith("//")))


@pytest.fixture
def workspace():
    """A workbench checkout in a folder another user can enter (pytest's tmp_path is root's alone)."""
    ws = Path(tempfile.mkdtemp(prefix="wb-host-folders-"))
    shutil.copy2(ROOT / "docker-compose.yml", ws / "docker-compose.yml")
    shutil.copytree(ROOT / ".devcontainer", ws / ".devcontainer")
    shutil.copytree(ROOT / "workbench", ws / "workbench", ignore=shutil.ignore_patterns("__pycache__"))
    (ws / "vllm").mkdir()
    yield ws
    shutil.rmtree(ws)


def _runner() -> tuple[list[str], int, int]:
    """As root, run as another user (so "owned by whoever ran it" can fail); otherwise as ourselves."""
    if os.geteuid() != 0:
        return [], os.getuid(), os.getgid()
    if not shutil.which("setpriv"):
        pytest.skip("setpriv (util-linux) is needed to run the command as a non-root user")
    return ["setpriv", f"--reuid={OTHER_UID}", f"--regid={OTHER_UID}", "--clear-groups"], OTHER_UID, OTHER_UID


@pytest.mark.parametrize("config", CONFIGS)
def test_initialize_command_makes_the_bind_sources_as_the_user(workspace, config):
    if not Path("/usr/bin/python3").exists():
        pytest.skip("no system python3 at /usr/bin/python3")
    prefix, uid, gid = _runner()
    if prefix:
        subprocess.run(["chown", "-R", f"{uid}:{gid}", str(workspace)], check=True)
    # An existing folder of someone else's, with content: left exactly as it is.
    (workspace / "results").mkdir()
    (workspace / "results" / "run.json").write_text("{}")
    os.chown(workspace / "results", 1234, 1234)
    os.chmod(workspace / "results", 0o700)
    before = (workspace / "results").stat()

    argv = [a.replace("${localWorkspaceFolder}", str(workspace)) for a in _config(config)["initializeCommand"]]
    env = {"PATH": BARE_PATH, "HOME": str(workspace / "home"), "HF_HOME": str(workspace / "cache" / "hf"),
           "WORKBENCH_WHEELS": str(workspace / "prebuilt" / "wheels")}
    proc = subprocess.run(prefix + argv, capture_output=True, text=True, env=env, cwd="/", timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr

    made = [workspace / p for p in ("custom_kernels", "patches", "scripts", "cache", "cache/hf", "prebuilt",
                                    "prebuilt/wheels")]
    for path in made:
        assert path.is_dir(), f"{path} not created:\n{proc.stdout}"
        assert (path.stat().st_uid, path.stat().st_gid) == (uid, gid), path
    assert f"host folder created: {workspace / 'prebuilt' / 'wheels'} (owner {uid}:{gid})" in proc.stdout
    after = (workspace / "results").stat()
    assert (after.st_uid, after.st_mode, after.st_mtime_ns) == (before.st_uid, before.st_mode, before.st_mtime_ns)
    assert (workspace / "results" / "run.json").read_text() == "{}"

    again = subprocess.run(prefix + argv, capture_output=True, text=True, env=env, cwd="/", timeout=60)
    assert again.returncode == 0 and "host folders: 0 created" in again.stdout


def test_it_reads_the_same_bind_sources_as_invoke_up(tmp_path):
    """The stdlib reader and compose.load_spec (PyYAML) agree on both services, variables set or not."""
    for env in ({}, {"WORKBENCH_FORK": str(tmp_path / "fork"), "WORKBENCH_RESULTS": str(tmp_path / "res"),
                     "WORKBENCH_WHEELS": str(tmp_path / "wh"), "HF_HOME": str(tmp_path / "hf")}):
        host = {**os.environ, **env}  # what the devcontainer CLI's Compose interpolates with
        settings = Settings(root=ROOT, fork=host.get("WORKBENCH_FORK", "vllm"),
                            results=host.get("WORKBENCH_RESULTS", "results"),
                            wheels=host.get("WORKBENCH_WHEELS", "wheels"),
                            hf_cache=host.get("HF_HOME", "~/.cache/huggingface"))
        expected = {ROOT}  # .devcontainer/docker-compose.devcontainer.yml adds the checkout itself
        for gpus in ("all", "none"):
            expected |= set(compose.load_spec(settings, gpus, env=env).bind_sources())
        for config in CONFIGS:
            files = host_folders.compose_files(ROOT / config)
            assert set(host_folders.bind_sources(files, host)) == expected


def test_an_entry_it_cannot_read_stops_with_the_fix(tmp_path):
    (tmp_path / "docker-compose.yml").write_text(
        "services:\n  dev:\n    volumes:\n      - type: bind\n        source: ./x\n        target: /x\n")
    (tmp_path / "devcontainer.json").write_text('{"dockerComposeFile": "docker-compose.yml"}')
    with pytest.raises(WorkbenchError, match=r"line 4: .* short-syntax volume.*SOURCE:TARGET"):
        host_folders.bind_sources(host_folders.compose_files(tmp_path / "devcontainer.json"), {})
    (tmp_path / "docker-compose.yml").write_text("services:\n  dev:\n    volumes: [./x:/x]\n")
    assert host_folders.main([str(tmp_path / "devcontainer.json")]) == 1
    assert not (tmp_path / "x").exists()


def test_as_root_a_new_folder_takes_the_owner_of_the_folder_it_is_made_in(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("the root rule needs root")
    home = tmp_path / "home"
    home.mkdir()
    os.chown(home, OTHER_UID, OTHER_UID + 1)
    made = host_folders.make_folders([home / "a" / "b", tmp_path / "c"])
    assert made == [home / "a" / "b", tmp_path / "c"]
    for path in (home / "a", home / "a" / "b"):
        assert (path.stat().st_uid, path.stat().st_gid) == (OTHER_UID, OTHER_UID + 1)
    assert (tmp_path / "c").stat().st_uid == tmp_path.stat().st_uid == 0
