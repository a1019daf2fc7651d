"""The vLLM submodule: the project's pin, `invoke source` on real git repos (a local fork stands in for
GitHub: no network here), switching forks without losing work, and the missing-submodule message."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from workbench.errors import WorkbenchError
from workbench.fork import source as src

ROOT = Path(__file__).resolve().parents[2]


def git(repo: Path, *args: str) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.com"}
    return subprocess.run(["git", "-c", "protocol.file.allow=always", *args], cwd=repo, env=env, check=True,
                          capture_output=True, text=True).stdout.strip()


def make_fork(path: Path, tag: str = "v0.13.0", marker: str = "") -> Path:
    (path / "vllm").mkdir(parents=True)
    (path / "csrc").mkdir()
    (path / "vllm" / "__init__.py").write_text(marker)
    (path / "csrc" / "ops.cu").write_text("\n")
    git(path, "init", "-q", "-b", "main")
    git(path, "add", "-A")
    git(path, "commit", "-qm", "release")
    git(path, "tag", tag)
    return path


@pytest.fixture
def project(tmp_path) -> tuple[Path, Path]:
    """A project repo with the fork as its `vllm` submodule (initialised, detached as submodules are)."""
    upstream = make_fork(tmp_path / "upstream")
    root = tmp_path / "project"
    root.mkdir()
    git(root, "init", "-q", "-b", "main")
    git(root, "submodule", "add", "-q", str(upstream), "vllm")
    git(root, "commit", "-qm", "add fork")
    git(root / "vllm", "checkout", "-q", "--detach", "HEAD")
    return root, upstream


def test_project_pins_upstream_v0_13_0():
    assert src.submodule_url(ROOT) == "https://github.com/vllm-project/vllm.git"
    assert src.pinned_commit(ROOT) == src.PINNED_COMMIT == "72506c98349d6bcd32b4e33eec7b5513453c1502"


def test_source_info_of_an_initialised_fork(project, tmp_path):
    root, upstream = project
    fork = root / "vllm"
    (fork / "vllm" / "edited.py").write_text("# untracked work\n")
    info = src.source_info(root, fork, tmp_path / "wheels")
    assert (info.version, info.version_source) == ("0.13.0", "git tag v0.13.0")
    state = info.state
    assert state.branch is None and state.commit == git(upstream, "rev-parse", "HEAD") == info.pinned
    assert (state.dirty_files, state.untracked, state.patches) == ((), ("vllm/edited.py",), ())
    assert info.url == str(upstream)
    assert f"https://wheels.vllm.ai/{state.commit}/vllm/" in info.wheel


def test_fork_state_of_a_real_git_fork(tmp_path):
    fork = make_fork(tmp_path / "fork")
    head = git(fork, "rev-parse", "HEAD")
    state = src.fork_state(fork)
    assert (state.initialised, state.commit, state.branch, state.dirty) == (True, head, "main", False)
    assert state.require() is state
    (fork / "csrc" / "ops.cu").write_text("// edited\n")
    git(fork, "mv", "vllm/__init__.py", "vllm/renamed.py")
    (fork / "notes.txt").write_text("untracked\n")
    git(fork, "checkout", "-q", "--detach")
    state = src.fork_state(fork)
    assert state.branch is None and state.short == head[:12]
    assert state.dirty_files == ("csrc/ops.cu", "vllm/renamed.py") and state.untracked == ("notes.txt",)


def test_fork_state_of_a_missing_empty_or_borrowed_folder(tmp_path):
    """Nothing there, an empty (uninitialised) submodule folder, and vLLM's source copied into another
    repository: never the enclosing repository's commit, and each refusal names the fix."""
    assert src.fork_state(tmp_path / "missing") == src.ForkState(tmp_path / "missing", initialised=False)
    project = tmp_path / "project"
    make_fork(project, tag="v1.0.0")  # any repository around the folder
    (project / "empty").mkdir()
    assert src.fork_state(project / "empty") == src.ForkState(project / "empty", initialised=False)
    with pytest.raises(WorkbenchError, match=r"the vLLM fork at .*/empty is not checked out: clone your vLLM fork"):
        src.fork_state(project / "empty").require(git_checkout=False)
    copied = project / "copied"
    (copied / "vllm").mkdir(parents=True)
    state = src.fork_state(copied)
    assert (state.initialised, state.commit, state.dirty_files, state.patches) == (True, None, (), ())
    assert state.require(git_checkout=False) is state  # enough to mount in the dev container
    with pytest.raises(WorkbenchError, match=r"copied is not a vLLM git checkout: clone your vLLM fork there"):
        state.require()


def test_uninitialised_submodule_is_one_line_with_the_fix(project, tmp_path):
    root, _ = project
    git(root, "submodule", "deinit", "-q", "-f", "vllm")
    with pytest.raises(WorkbenchError, match=r"not checked out: run `git submodule update --init vllm`"):
        src.source_info(root, root / "vllm", tmp_path / "wheels")
    env = {**os.environ, "INVOKE_WORKBENCH_FORK": str(root / "vllm")}
    result = subprocess.run([sys.executable, "-m", "invoke", "-r", str(ROOT), "source"], env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"error: the vLLM fork at {root / 'vllm'} is not checked out: run `git submodule update --init vllm` "
        f"(in {root}), or set workbench.fork to your vLLM checkout"]


def test_switch_fork_and_ref(project, tmp_path):
    root, _ = project
    mine = make_fork(tmp_path / "my-fork", marker="# my fork's own v0.13.0 commit\n")  # its tag differs
    git(mine, "checkout", "-q", "-b", "gemm-hook")
    (mine / "vllm" / "hook.py").write_text("HOOK = True\n")
    git(mine, "add", "-A")
    git(mine, "commit", "-qm", "my hook")
    head = src.switch_fork(root, root / "vllm", str(mine), "gemm-hook")
    assert head == git(mine, "rev-parse", "gemm-hook")
    assert src.submodule_url(root) == str(mine)
    assert (root / "vllm" / "vllm" / "hook.py").read_text() == "HOOK = True\n"
    info = src.source_info(root, root / "vllm", tmp_path / "wheels")
    assert info.state.commit == head and info.state.branch is None and info.pinned != head


def test_switch_refuses_with_uncommitted_work(project, tmp_path):
    root, _ = project
    mine = make_fork(tmp_path / "my-fork")
    edited = root / "vllm" / "csrc" / "ops.cu"
    edited.write_text("// my kernel work\n")
    before = (git(root, "config", "-f", ".gitmodules", "submodule.vllm.url"), git(root / "vllm", "rev-parse", "HEAD"))
    with pytest.raises(WorkbenchError, match=r"uncommitted work \(csrc/ops\.cu\).*nothing was changed"):
        src.switch_fork(root, root / "vllm", str(mine), "main")
    assert edited.read_text() == "// my kernel work\n"
    assert before == (git(root, "config", "-f", ".gitmodules", "submodule.vllm.url"),
                      git(root / "vllm", "rev-parse", "HEAD"))


def test_external_fork_shows_its_own_remote_and_switches_without_gitmodules(project, tmp_path):
    """workbench.fork pointing at a checkout outside the project: `invoke source` prints that checkout's
    remote, not the project's .gitmodules URL, and has no project pin; switching it leaves .gitmodules."""
    root, _ = project
    remote = make_fork(tmp_path / "team-fork", marker="# the team's fork\n")
    external = tmp_path / "elsewhere" / "vllm"
    git(tmp_path, "clone", "-q", str(remote), str(external))
    info = src.source_info(root, external, tmp_path / "wheels")
    assert (info.url, info.url_source, info.pinned) == (str(remote), "remote origin", "")
    env = {**os.environ, "INVOKE_WORKBENCH_FORK": str(external), "COLUMNS": "400"}  # rich wraps at 80
    shown = subprocess.run([sys.executable, "-m", "invoke", "-r", str(ROOT), "source"], env=env,
                           capture_output=True, text=True, timeout=120)
    assert shown.returncode == 0, shown.stderr
    assert str(remote) in shown.stdout and "remote origin" in shown.stdout
    assert "github.com/vllm-project" not in shown.stdout  # the workbench's own .gitmodules URL
    gitmodules = (root / ".gitmodules").read_text()
    git(remote, "checkout", "-q", "-b", "next")
    (remote / "vllm" / "next.py").write_text("NEXT = 1\n")
    git(remote, "add", "-A")
    git(remote, "commit", "-qm", "next")
    head = src.switch_fork(root, external, None, "next")
    assert head == git(remote, "rev-parse", "next") and (root / ".gitmodules").read_text() == gitmodules
    missing = tmp_path / "not-cloned-yet"
    with pytest.raises(WorkbenchError, match="not the project's submodule: clone your vLLM fork there") as err:
        src.switch_fork(root, missing, str(remote), "main")
    assert "submodule update" not in str(err.value)


def test_source_json_carries_what_the_table_shows(project, tmp_path):
    root, upstream = project
    fork = root / "vllm"
    (fork / "csrc" / "ops.cu").write_text("// my kernel\n")
    (fork / "vllm" / "new.py").write_text("\n")
    env = {**os.environ, "INVOKE_WORKBENCH_FORK": str(fork)}
    done = subprocess.run([sys.executable, "-m", "invoke", "-r", str(ROOT), "source", "--json"], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert (data["version"], data["version_source"]) == ("0.13.0", "git tag v0.13.0")
    assert data["commit"] == git(upstream, "rev-parse", "HEAD") and data["branch"] is None and data["detached"]
    assert data["path"] == str(fork) and data["url"] == str(upstream)
    assert (data["dirty_files"], data["untracked_files"], data["patches_applied"]) == (
        ["csrc/ops.cu"], ["vllm/new.py"], [])
    assert "wheels.vllm.ai" in data["precompiled_wheel"]
    missing = subprocess.run([sys.executable, "-m", "invoke", "-r", str(ROOT), "source", "--json"],
                             env={**env, "INVOKE_WORKBENCH_FORK": str(tmp_path / "none")}, capture_output=True,
                             text=True, timeout=120)
    assert missing.returncode == 1 and missing.stdout == "" and missing.stderr.startswith("error: ")
    assert len(missing.stderr.strip().splitlines()) == 1
