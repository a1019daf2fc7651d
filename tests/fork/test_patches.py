"""Patch series on git repos made from the real vLLM release sdists, one per shipped series (vllm_source tier).

Every scenario hashes the whole tree (bytes + mode of each file, untracked ones included) and the
index before and after, and checks that user edits survive byte-for-byte and that the series files are
either exactly unpatched or exactly patched — never in between.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.vllm_source import make_fork_repo
from workbench.errors import WorkbenchError
from workbench.fork import patches as P
from workbench.fork import series as S
from workbench.fork.checkout import require_checkout
from workbench.fork.refresh import refresh_series

pytestmark = pytest.mark.vllm_source

ROOT = Path(__file__).resolve().parents[2]
PATCHES = ROOT / "patches"
VERSIONS = S.available_series(PATCHES)  # every release the workbench ships a series for
ENVS = "vllm/envs.py"
UTILS = "vllm/model_executor/layers/utils.py"
LINEAR = "vllm/model_executor/layers/linear.py"


# --------------------------------------------------------------------------------------- helpers
def git(repo: Path, *args: str, input: bytes | None = None) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "u", "GIT_AUTHOR_EMAIL": "u@example.com",
           "GIT_COMMITTER_NAME": "u", "GIT_COMMITTER_EMAIL": "u@example.com"}
    return subprocess.run(["git", *args], cwd=repo, env=env, check=True, capture_output=True,
                          input=input).stdout.decode()


def tree_hashes(repo: Path) -> dict[str, str]:
    """relative path -> sha256 of mode + bytes, for every file outside .git (untracked included)."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(repo):
        if ".git" in dirnames:
            dirnames.remove(".git")
        for name in filenames:
            path = Path(dirpath) / name
            rel = path.relative_to(repo).as_posix()
            st = path.lstat()
            data = os.readlink(path).encode() if path.is_symlink() else path.read_bytes()
            out[rel] = hashlib.sha256(f"{st.st_mode:o}".encode() + b"\0" + data).hexdigest()
    return out


def index_state(repo: Path) -> str:
    return git(repo, "ls-files", "-s")


def snapshot(repo: Path) -> tuple[dict[str, str], str]:
    return tree_hashes(repo), index_state(repo)


def _settle_gc(repo: Path) -> None:
    """The sdist's commit passes gc.auto's loose-object limit, so git packs in the background; a copy
    taken meanwhile fails (objects vanish under `cp`). Wait for that gc, then turn auto-gc off."""
    git(repo, "config", "gc.auto", "0")
    deadline = time.monotonic() + 300
    while (repo / ".git" / "gc.pid").exists() and time.monotonic() < deadline:
        time.sleep(0.2)


@pytest.fixture(scope="module")
def base_repos(tmp_path_factory):
    """One pristine fork repo per version, plus the exact patched contents of the series files."""
    repos = {}
    for version in VERSIONS:
        repo = make_fork_repo(version, tmp_path_factory.mktemp(f"base-{version}") / "vllm")
        _settle_gc(repo)
        series = S.load_series(PATCHES, version)
        scratch = tmp_path_factory.mktemp(f"patched-{version}") / "vllm"
        shutil.copytree(repo, scratch, symlinks=True)
        for p in series.patches:
            git(scratch, "apply", str(p.path))
        patched = {f: (scratch / f).read_bytes() for f in series.files}
        repos[version] = (repo, series, patched)
    return repos


@pytest.fixture
def fork(base_repos, tmp_path, request):
    """A fresh copy of the pristine fork for the version in the test's `version` param (default 0.13.0)."""
    version = getattr(request, "param", "0.13.0")
    repo, series, patched = base_repos[version]
    dest = tmp_path / "vllm"
    subprocess.run(["cp", "-a", str(repo), str(dest)], check=True)  # 3x faster than shutil.copytree here
    return dest, series, patched


def assert_files(repo: Path, expected: dict[str, bytes]) -> None:
    for f, data in expected.items():
        assert (repo / f).read_bytes() == data, f"{f} is not exactly as expected"


def assert_only_series_changed(before: dict[str, str], after: dict[str, str], series: S.Series) -> None:
    """Everything outside the series files is byte-for-byte unchanged (user edits included)."""
    outside_before = {k: v for k, v in before.items() if k not in series.files}
    outside_after = {k: v for k, v in after.items() if k not in series.files}
    assert outside_before == outside_after


def user_edit(repo: Path, rel: str, text: str = "\n# my local experiment\n") -> None:
    path = repo / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        fh.write(text)


# --------------------------------------------------------------------------------------- basics
@pytest.mark.parametrize("fork", VERSIONS, indirect=True)
def test_apply_status_idempotent_revert_roundtrip(fork):
    repo, series, patched = fork
    before = snapshot(repo)
    assert S.detect_version(repo)[0] == series.version
    assert P.series_state(repo, series).statuses == [P.PENDING] * len(series.patches)
    P.check_series(repo, series)
    assert snapshot(repo) == before  # --check changes nothing

    result = P.apply_series(repo, series)
    assert result.done == [p.name for p in series.patches]
    assert_files(repo, patched)
    assert_only_series_changed(before[0], tree_hashes(repo), series)
    assert index_state(repo) == before[1]  # the user's index is never touched
    assert P.series_state(repo, series).statuses == [P.APPLIED] * len(series.patches)
    assert P.applied_series(repo) == [f"{series.version}/{p.name}" for p in series.patches]

    applied = snapshot(repo)
    again = P.apply_series(repo, series)  # idempotent
    assert again.done == [] and again.skipped == [p.name for p in series.patches]
    assert snapshot(repo) == applied

    P.revert_series(repo, series)
    assert snapshot(repo) == before
    assert P.applied_series(repo) == []
    assert P.revert_series(repo, series).done == []  # reverting a clean tree is a no-op
    assert snapshot(repo) == before


def test_dry_run_changes_nothing(fork):
    repo, series, _ = fork
    before = snapshot(repo)
    assert P.apply_series(repo, series, dry_run=True).done == [p.name for p in series.patches]
    assert snapshot(repo) == before
    P.apply_series(repo, series)
    applied = snapshot(repo)
    assert len(P.revert_series(repo, series, dry_run=True).done) == len(series.patches)
    assert snapshot(repo) == applied


def test_series_of_another_release_refused_and_nothing_changes(fork):
    repo, _, _ = fork
    other = S.load_series(PATCHES, "0.33.0")
    before = snapshot(repo)
    with pytest.raises(WorkbenchError, match=r"does not apply to this fork .*patch failed"):
        P.apply_series(repo, other)
    with pytest.raises(WorkbenchError, match="does not apply"):
        P.check_series(repo, other)
    assert P.series_state(repo, other).statuses[0] == P.CONFLICT
    assert snapshot(repo) == before


def assert_round_trip(repo, series, patched):
    """Apply changes only the series' files, and revert gives back the tree and index byte for byte."""
    before = snapshot(repo)
    P.apply_series(repo, series)
    assert_files(repo, patched)
    assert_only_series_changed(before[0], tree_hashes(repo), series)
    P.revert_series(repo, series)
    assert snapshot(repo) == before


# --------------------------------------------------------------------------------------- user edits
@pytest.mark.parametrize("rel", ["README.md", "vllm/config/__init__.py", "csrc/activation_kernels.cu"])
def test_edits_elsewhere_survive_apply_and_revert(fork, rel):
    repo, series, patched = fork
    user_edit(repo, rel)
    assert_round_trip(repo, series, patched)


def test_untracked_files_survive(fork):
    repo, series, patched = fork
    user_edit(repo, "vllm/model_executor/layers/my_gemm.py", "def gemm(): pass\n")
    user_edit(repo, "scratch/notes.txt", "notes\n")
    assert_round_trip(repo, series, patched)


def test_staged_edit_elsewhere_keeps_the_index(fork):
    repo, series, patched = fork
    user_edit(repo, "README.md")
    git(repo, "add", "README.md")
    user_edit(repo, "README.md", "unstaged on top\n")
    before = snapshot(repo)
    P.apply_series(repo, series)
    assert index_state(repo) == before[1]
    assert_files(repo, patched)
    assert_only_series_changed(before[0], tree_hashes(repo), series)
    P.revert_series(repo, series)
    assert snapshot(repo) == before


@pytest.mark.parametrize("fork", VERSIONS, indirect=True)
@pytest.mark.parametrize("rel", [ENVS, UTILS, LINEAR])
def test_edit_in_a_patched_file_refuses_apply_naming_it(fork, rel):
    repo, series, _ = fork
    user_edit(repo, rel)
    before = snapshot(repo)
    with pytest.raises(WorkbenchError, match=rf"refusing to apply.*{rel}"):
        P.apply_series(repo, series)
    with pytest.raises(WorkbenchError, match=rf"refusing to apply.*{rel}"):
        P.check_series(repo, series)
    assert snapshot(repo) == before
    assert P.series_state(repo, series).user_dirty == [rel]


def test_conflicting_edit_on_the_patched_lines_refused(fork):
    repo, series, _ = fork
    path = repo / ENVS
    text = path.read_text()
    assert "    VLLM_DISABLED_KERNELS: list[str] = []\n" in text
    path.write_text(text.replace("    VLLM_DISABLED_KERNELS: list[str] = []\n",
                                 "    VLLM_DISABLED_KERNELS: list[str] = []  # mine\n    VLLM_MY_FLAG: bool = False\n"))
    before = snapshot(repo)
    with pytest.raises(WorkbenchError, match=ENVS):
        P.apply_series(repo, series)
    with pytest.raises(WorkbenchError, match=ENVS):
        P.apply_series(repo, series, three_way=True)
    assert snapshot(repo) == before


def test_staged_edit_in_a_patched_file_refused(fork):
    repo, series, _ = fork
    user_edit(repo, UTILS)
    git(repo, "add", UTILS)
    git(repo, "checkout", "--", UTILS)  # worktree back to HEAD, the edit lives only in the index
    before = snapshot(repo)
    with pytest.raises(WorkbenchError, match=UTILS):
        P.apply_series(repo, series)
    assert snapshot(repo) == before


def test_deleted_patched_file_refused(fork):
    repo, series, _ = fork
    (repo / LINEAR).unlink()
    before = snapshot(repo)
    with pytest.raises(WorkbenchError, match=LINEAR):
        P.apply_series(repo, series)
    assert snapshot(repo) == before and not (repo / LINEAR).exists()


def test_patched_file_deleted_after_apply_is_reported_not_counted(fork):
    """All three patches applied, then linear.py deleted: never "3 of 3 applied" - check, apply, revert and
    status name the deleted file and change nothing."""
    repo, series, _ = fork
    P.apply_series(repo, series)
    (repo / LINEAR).unlink()
    before = snapshot(repo)
    state = P.series_state(repo, series)
    assert state.deleted == [LINEAR]
    touching = [p for p in series.patches if LINEAR in p.files]
    assert touching and all(s == P.DELETED for p, s in zip(series.patches, state.statuses, strict=True)
                            if p in touching)
    assert P.applied_series(repo) == [f"{series.version}/{p.name}" for p in series.patches if p not in touching]
    for action in (P.check_series, P.apply_series, P.revert_series):
        with pytest.raises(WorkbenchError, match=f"{LINEAR} is deleted from the fork's working tree"):
            action(repo, series)
    check = _invoke(["patch.check"], repo)
    assert check.returncode == 1 and "Traceback" not in check.stderr
    assert check.stderr.strip().splitlines() == [
        f"error: {LINEAR} is deleted from the fork's working tree but the series patches it: restore "
        f"(`git -C {repo} checkout -- {LINEAR}`, then `invoke patch.apply`), or commit the deletion and port the "
        "series"]
    assert "applied" not in check.stdout
    status = _invoke(["patch.status"], repo)
    assert status.returncode == 0 and "file deleted" in status.stdout and "deleted:" in status.stdout
    assert snapshot(repo) == before


def test_edit_in_patched_file_after_apply_refuses_revert(fork):
    repo, series, _ = fork
    P.apply_series(repo, series)
    user_edit(repo, LINEAR, "\n# tuned my hook\n")
    user_edit(repo, "README.md")
    before = snapshot(repo)
    with pytest.raises(WorkbenchError, match=rf"refusing to revert.*{LINEAR}"):
        P.revert_series(repo, series)
    assert snapshot(repo) == before
    state = P.series_state(repo, series)
    assert state.user_dirty == [LINEAR] and state.statuses[-1] == P.UNKNOWN
    # applying again refuses too (patch 3 might be under the edit), still changing nothing
    with pytest.raises(WorkbenchError, match=LINEAR):
        P.apply_series(repo, series)
    assert snapshot(repo) == before


def test_edit_in_patched_file_after_apply_allows_reverting_nothing_else(fork):
    """With an edit in envs.py (patch 1's file) after apply, revert must refuse rather than undo 2 and 3."""
    repo, series, _ = fork
    P.apply_series(repo, series)
    user_edit(repo, ENVS)
    before = snapshot(repo)
    with pytest.raises(WorkbenchError, match=ENVS):
        P.revert_series(repo, series)
    assert snapshot(repo) == before


# --------------------------------------------------------------------------------------- partial series
def test_partially_applied_series_is_completed(fork):
    repo, series, patched = fork
    git(repo, "apply", str(series.patches[0].path))  # the user applied patch 1 by hand
    user_edit(repo, "README.md")
    before = snapshot(repo)
    state = P.series_state(repo, series)
    assert state.statuses == [P.APPLIED, P.PENDING, P.PENDING] and state.user_dirty == []
    result = P.apply_series(repo, series)
    assert result.done == [p.name for p in series.patches[1:]]
    assert_files(repo, patched)
    assert_only_series_changed(before[0], tree_hashes(repo), series)


def test_partially_applied_series_reverts_only_what_is_applied(fork):
    repo, series, _ = fork
    pristine = snapshot(repo)
    for p in series.patches[:2]:
        git(repo, "apply", str(p.path))
    result = P.revert_series(repo, series)
    assert result.done == [series.patches[1].name, series.patches[0].name]
    assert snapshot(repo) == pristine


def test_out_of_order_patch_refused_both_ways(fork):
    repo, series, _ = fork
    git(repo, "apply", str(series.patches[1].path))  # patch 2 without patch 1
    before = snapshot(repo)
    with pytest.raises(WorkbenchError, match=UTILS):
        P.apply_series(repo, series)
    with pytest.raises(WorkbenchError, match=UTILS):
        P.revert_series(repo, series)
    assert snapshot(repo) == before


def test_committed_series_is_recognised_and_kept(fork):
    repo, series, patched = fork
    P.apply_series(repo, series)
    git(repo, "commit", "-qam", "my fork carries the hook")
    before = snapshot(repo)
    state = P.series_state(repo, series)
    assert state.statuses == [P.COMMITTED] * 3
    assert P.apply_series(repo, series).done == []
    result = P.revert_series(repo, series)
    assert result.done == [] and result.skipped == [p.name for p in series.patches]
    assert snapshot(repo) == before
    assert_files(repo, patched)


# --------------------------------------------------------------------------------------- atomicity
def _broken_series(tmp_path: Path, series: S.Series, break_index: int) -> S.Series:
    """A copy of ``series`` whose patch ``break_index`` has a context line that matches nothing."""
    d = tmp_path / "patches" / series.version
    d.mkdir(parents=True)
    shutil.copy(series.directory / "series", d / "series")
    for i, p in enumerate(series.patches):
        text = p.path.read_text()
        if i == break_index:
            lines = text.splitlines(keepends=True)
            k = next(j for j, line in enumerate(lines) if line.startswith("@@"))
            ctx = next(j for j in range(k + 1, len(lines)) if lines[j].startswith(" ") and lines[j].strip())
            lines[ctx] = " # context that is not in the file\n"
            text = "".join(lines)
        (d / p.name).write_text(text)
    return S.load_series(tmp_path / "patches", series.version)


@pytest.mark.parametrize("three_way", [False, True])
def test_failure_midway_rolls_back_everything(fork, tmp_path, three_way):
    repo, series, _ = fork
    broken = _broken_series(tmp_path, series, 2)
    user_edit(repo, "README.md")
    git(repo, "add", "README.md")
    before = snapshot(repo)
    with pytest.raises(WorkbenchError):
        P.apply_series(repo, broken, three_way=three_way)
    assert snapshot(repo) == before  # patches 1 and 2 were rolled back, index restored


def test_interrupt_midway_rolls_back(fork, monkeypatch):
    repo, series, _ = fork
    before = snapshot(repo)
    real = P._git
    calls = {"apply": 0}

    def interrupted(repo_, *args, **kwargs):
        if args and args[0] == "apply" and "--cached" not in args and "--check" not in args:
            calls["apply"] += 1
            if calls["apply"] == 3:
                raise KeyboardInterrupt
        return real(repo_, *args, **kwargs)

    monkeypatch.setattr(P, "_git", interrupted)
    with pytest.raises(KeyboardInterrupt):
        P.apply_series(repo, series)
    assert calls["apply"] == 3
    monkeypatch.setattr(P, "_git", real)
    assert snapshot(repo) == before


def test_three_way_applies_over_moved_context_and_keeps_the_index(fork):
    repo, series, patched = fork
    # The fork moved on: a committed change inside the context of patch 3's hunk (2 lines below it).
    path = repo / LINEAR
    text = path.read_text()
    old = "        self.disable_tp = disable_tp\n"
    assert text.count(old) == 1
    path.write_text(text.replace(old, "        self.disable_tp = disable_tp  # fork-local comment\n"))
    git(repo, "commit", "-qam", "fork change near the hook")
    with pytest.raises(WorkbenchError, match="does not apply"):
        P.apply_series(repo, series)
    index_before = index_state(repo)
    P.apply_series(repo, series, three_way=True)
    assert "use_custom_gemm" in path.read_text() and "fork-local comment" in path.read_text()
    assert_files(repo, {f: patched[f] for f in (ENVS, UTILS)})
    assert index_state(repo) == index_before


# --------------------------------------------------------------------------------------- versions, series
def test_version_from_setuptools_scm_file_and_unknown(fork):
    repo, series, _ = fork
    git(repo, "tag", "-d", f"v{series.version}")
    assert S.detect_version(repo) == (series.version, "vllm/_version.py (setuptools-scm)")
    (repo / "vllm" / "_version.py").unlink()
    assert S.detect_version(repo) == (series.version, "PKG-INFO")
    (repo / "PKG-INFO").unlink()
    with pytest.raises(WorkbenchError, match=r"cannot tell which vLLM release.*--series"):
        S.resolve_series(repo, PATCHES)


def test_missing_patch_file_in_series(tmp_path):
    d = tmp_path / "0.13.0"
    d.mkdir()
    (d / "series").write_text("# comment\n0001-gone.patch\n")
    with pytest.raises(WorkbenchError, match=r"lists 0001-gone\.patch, which is missing"):
        S.load_series(tmp_path, "0.13.0")
    with pytest.raises(WorkbenchError, match=r"no patch series for vLLM 9.9.9 \(have: 0.13.0\)"):
        S.load_series(tmp_path, "9.9.9")


def test_not_a_checkout(tmp_path):
    (tmp_path / "vllm").mkdir()
    # No project declares these paths as submodules: clone or point workbench.fork, not `submodule update`.
    with pytest.raises(WorkbenchError, match="is not checked out: clone your vLLM fork there") as err:
        require_checkout(tmp_path / "vllm")
    assert "submodule" not in str(err.value)
    with pytest.raises(WorkbenchError, match=r"not checked out: .*set workbench\.fork"):
        require_checkout(tmp_path / "missing")
    (tmp_path / "vllm" / "vllm").mkdir()  # vLLM's source, but no git checkout: nothing to patch against
    with pytest.raises(WorkbenchError, match="is not a vLLM git checkout: clone your vLLM fork there"):
        P.apply_series(tmp_path / "vllm", S.load_series(PATCHES, "0.13.0"))


def test_a_source_copy_inside_another_repository_is_not_patched(fork, tmp_path):
    """The sdist copied into a project's `vllm/` folder sits in the project's repository: git would answer
    for the project there (its HEAD, its index), so the series refuses instead of patching against it."""
    repo, series, _ = fork
    project = tmp_path / "project"
    project.mkdir()
    git(project, "init", "-q", "-b", "main")
    git(project, "commit", "-q", "--allow-empty", "-m", "project")
    copy = project / "vllm"
    shutil.copytree(repo, copy, ignore=shutil.ignore_patterns(".git"))
    before = snapshot(project)
    for action in (P.apply_series, P.check_series, P.revert_series, P.series_state):
        with pytest.raises(WorkbenchError, match=f"{copy} is not a vLLM git checkout"):
            action(copy, series)
    assert snapshot(project) == before
    assert S.detect_version(copy) == (series.version, "vllm/_version.py (setuptools-scm)")  # not the project's tags


def test_series_names_a_release_not_a_path(tmp_path):
    for bad in ("../0.13.0", "latest", "0.13", "/etc"):
        with pytest.raises(WorkbenchError, match=rf"--series '{re.escape(bad)}' is not a vLLM release number: give "
                                                 r"X\.Y\.Z \(series here: 0\.13\.0, "):
            S.load_series(PATCHES, bad)


def test_refresh_roundtrip(fork, tmp_path):
    """Commit the series in a fork, edit on top, --refresh: the new series reproduces that tree exactly."""
    repo, series, _ = fork
    P.apply_series(repo, series)
    git(repo, "commit", "-qam", "GEMM hook")
    user_edit(repo, ENVS, "# VLLM_MY_KNOB: tuning knob for my kernel\n")
    user_edit(repo, "README.md")
    (repo / "README.md").write_text((repo / "README.md").read_text())
    with pytest.raises(WorkbenchError, match="uncommitted edits"):
        refresh_series(repo, tmp_path / "patches", series.version)
    git(repo, "commit", "-qam", "knob")
    names = refresh_series(repo, tmp_path / "patches", series.version)
    assert len(names) == 2 and (tmp_path / "patches" / series.version / "series").is_file()
    refreshed = S.load_series(tmp_path / "patches", series.version)
    expected = {f: (repo / f).read_bytes() for f in refreshed.files}
    fresh = tmp_path / "fresh"
    git(repo, "worktree", "add", "-q", "--detach", str(fresh), f"v{series.version}")
    P.apply_series(fresh, refreshed)
    assert_files(fresh, expected)
    assert "GEMM hook" in refreshed.patches[0].subject


@pytest.mark.parametrize("fork", VERSIONS, indirect=True)
def test_each_shipped_series_is_what_refresh_writes(fork, tmp_path):
    """A series is made the way a user makes one: commits in a fork of the release, then patch.refresh.
    Taking a shipped series back as commits (git am) and refreshing gives every file byte for byte —
    a series edited by hand, or saved from other commits, fails here."""
    repo, series, patched = fork
    git(repo, "am", "-q", "--keep-non-patch", *[str(p.path.resolve()) for p in series.patches])
    assert_files(repo, patched)
    names = refresh_series(repo, tmp_path / "patches", series.version)
    assert names == [p.name for p in series.patches]
    written = tmp_path / "patches" / series.version
    assert sorted(f.name for f in written.iterdir()) == sorted(f.name for f in series.directory.iterdir())
    for f in written.iterdir():
        assert f.read_bytes() == (series.directory / f.name).read_bytes(), f.name


# --------------------------------------------------------------------------------------- the task
def _invoke(args: list[str], fork: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "INVOKE_WORKBENCH_FORK": str(fork)}
    return subprocess.run([sys.executable, "-m", "invoke", "-r", str(ROOT), *args], env=env,
                          capture_output=True, text=True, timeout=300)


def test_invoke_patch_task_end_to_end(fork):
    repo, _, patched = fork
    user_edit(repo, "README.md")
    status = _invoke(["patch.status"], repo)
    assert status.returncode == 0, status.stderr
    assert "pending" in status.stdout and "git tag v0.13.0" in status.stdout
    done = _invoke(["patch"], repo)
    assert done.returncode == 0, done.stderr
    assert_files(repo, patched)
    user_edit(repo, LINEAR)
    before = snapshot(repo)
    refused = _invoke(["patch.revert"], repo)
    assert refused.returncode == 1
    assert refused.stderr.strip().count("\n") == 0 and LINEAR in refused.stderr  # one line, no traceback
    assert snapshot(repo) == before


def test_patch_status_json_carries_each_patchs_state(fork):
    repo, series, _ = fork
    P.apply_series(repo, S.Series(series.version, series.directory, series.patches[:1]))
    user_edit(repo, "README.md")
    done = _invoke(["patch.status", "--json"], repo)
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert (data["series"], data["version"], data["version_source"]) == ("0.13.0", "0.13.0", "git tag v0.13.0")
    assert [p["name"] for p in data["patches"]] == [p.name for p in series.patches]
    assert [p["state"] for p in data["patches"]] == [P.APPLIED] + [P.PENDING] * (len(series.patches) - 1)
    assert data["patches"][0]["files"] == list(series.patches[0].files) and data["patches"][0]["subject"]
    assert (data["applied"], data["committed"], data["conflict"], data["user_dirty"]) == (1, 0, "", [])
