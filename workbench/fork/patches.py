"""Patch series for the vLLM fork: status, check, apply, revert and refresh, without ever losing a user edit.

A series is ``patches/<vllm-version>/series`` (one patch file name per line, ``#`` comments) plus git
format-patch files. Patches go into the fork's *working tree* with plain ``git apply`` (exact context,
never fuzzy; ``--3way`` only when asked) and the user's index is left as it was.

How state is known without trusting a record: starting from the fork's HEAD in a throwaway index,
the series is simulated patch by patch (``git apply --cached``). ``expected[k]`` is HEAD plus the first
``k`` pending patches; the worktree's touched files are hashed and compared with each ``expected[k]``:
the best match says how many patches are applied, and any touched file that matches no simulated
state carries user edits. Patches are only ever written to files that carry no user edits, after a
byte-for-byte backup that is restored if any step fails, so the tree is never left half-patched.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from workbench.errors import WorkbenchError
from workbench.git import first_line as _first_line
from workbench.git import fork_checkout_fix
from workbench.git import run as _git

RECORD = "workbench/patches.json"  # inside the fork's git dir: `git rev-parse --git-path` resolves it

# Patch states shown by `invoke patch --status`.
COMMITTED = "committed"  # part of the fork's HEAD (e.g. the user committed it)
APPLIED = "applied"  # in the working tree, not committed
PENDING = "pending"  # applies cleanly on top of what is applied
CONFLICT = "conflict"  # does not apply (the fork moved on, or an earlier patch is missing)
UNKNOWN = "unknown"  # your edits in its files hide whether it is applied
DELETED = "file deleted"  # a file it patches is gone from the working tree


# --------------------------------------------------------------------------------------- git plumbing
def _git_out(repo: Path, *args: str, env: dict[str, str] | None = None) -> str:
    return _git(repo, *args, env=env).stdout.decode().strip()


def fork_toplevel(fork: Path) -> Path:
    """The fork as a git checkout; a clear error when it is missing or not its own repository."""
    fork = Path(fork)
    if not fork.is_dir():
        raise WorkbenchError(f"no vLLM fork at {fork}", fix=fork_checkout_fix(fork))
    result = _git(fork, "rev-parse", "--show-toplevel", check=False)
    top = Path(result.stdout.decode().strip()) if result.returncode == 0 else None
    if top is None or top.resolve() != fork.resolve() or not (fork / "vllm").is_dir():
        raise WorkbenchError(f"{fork} is not a vLLM git checkout", fix=fork_checkout_fix(fork))
    return fork


def git_path(fork: Path, name: str) -> Path:
    """A path inside the fork's git dir (works for submodules and worktrees, whose .git is a file)."""
    out = _git_out(fork, "rev-parse", "--git-path", name)
    path = Path(out)
    return path if path.is_absolute() else (fork / path)


# --------------------------------------------------------------------------------------- the series
@dataclass(frozen=True)
class Patch:
    """One patch of a series: its file and the repository paths it touches."""

    name: str
    path: Path
    files: tuple[str, ...]

    @property
    def subject(self) -> str:
        """The format-patch subject line (what the patch does)."""
        for line in self.path.read_text(errors="replace").splitlines():
            if line.startswith("Subject:"):
                return re.sub(r"^Subject:\s*(\[PATCH[^\]]*\]\s*)?", "", line)
        return self.name


@dataclass(frozen=True)
class Series:
    version: str
    directory: Path
    patches: tuple[Patch, ...]

    @property
    def files(self) -> tuple[str, ...]:
        return tuple(sorted({f for p in self.patches for f in p.files}))


def available_series(patches_root: Path) -> list[str]:
    """Versions that have a series file under ``patches_root``, oldest first."""
    from packaging.version import InvalidVersion, Version

    found = [d.name for d in Path(patches_root).glob("*") if (d / "series").is_file()]

    def key(v: str):
        try:
            return (0, Version(v))
        except InvalidVersion:
            return (1, v)

    return sorted(found, key=key)


def patch_files(patch: Path) -> tuple[str, ...]:
    """Repository paths a git patch touches (both sides of a rename), from its diff headers."""
    files: list[str] = []
    for line in patch.read_text(errors="replace").splitlines():
        m = re.match(r"^(?:---|\+\+\+) (?:[ab]/)?(.+?)\t?$", line)
        if m and m.group(1) != "/dev/null":
            files.append(m.group(1))
        m = re.match(r"^(?:rename|copy) (?:from|to) (.+)$", line)
        if m:
            files.append(m.group(1))
    return tuple(dict.fromkeys(files))


def load_series(patches_root: Path, version: str) -> Series:
    """Read ``patches/<version>/series``; a missing series or patch file is one line with the fix."""
    directory = Path(patches_root) / version
    series_file = directory / "series"
    if not series_file.is_file():
        have = ", ".join(available_series(patches_root)) or "none"
        raise WorkbenchError(f"no patch series for vLLM {version} (have: {have}): pass --series VERSION, "
                             f"or create patches/{version}/ with `invoke patch --refresh --series {version}`")
    patches = []
    for raw in series_file.read_text().splitlines():
        name = raw.split("#", 1)[0].strip()
        if not name:
            continue
        path = directory / name
        if not path.is_file():
            raise WorkbenchError(f"{series_file} lists {name}, which is missing: restore it or remove the line")
        files = patch_files(path)
        if not files:
            raise WorkbenchError(f"{path} is not a git patch (no diff headers): regenerate it with --refresh")
        patches.append(Patch(name=name, path=path, files=files))
    return Series(version=version, directory=directory, patches=tuple(patches))


# --------------------------------------------------------------------------------------- versions
def detect_version(fork: Path) -> tuple[str, str]:
    """The vLLM release the fork is based on, and where that was read: the nearest ``v*`` release tag,
    else setuptools-scm's ``vllm/_version.py``, else the sdist's PKG-INFO."""
    fork = Path(fork)
    if (fork / ".git").exists():
        result = _git(fork, "describe", "--tags", "--abbrev=0", "--match", "v[0-9]*.[0-9]*.[0-9]*",
                      "--exclude", "*rc*", "HEAD", check=False)
        tag = result.stdout.decode().strip()
        if result.returncode == 0 and re.fullmatch(r"v\d+\.\d+\.\d+", tag):
            return tag[1:], f"git tag {tag}"
    version_py = fork / "vllm" / "_version.py"
    if version_py.is_file():
        m = re.search(r"^__version__\s*=\s*(?:version\s*=\s*)?['\"]([^'\"]+)['\"]", version_py.read_text(), re.M)
        if m and re.fullmatch(r"\d+\.\d+\.\d+", m.group(1)):
            return m.group(1), "vllm/_version.py (setuptools-scm)"
    pkg_info = fork / "PKG-INFO"
    if pkg_info.is_file():
        m = re.search(r"^Version:\s*(\d+\.\d+\.\d+)\s*$", pkg_info.read_text(errors="replace"), re.M)
        if m:
            return m.group(1), "PKG-INFO"
    raise WorkbenchError(
        f"cannot tell which vLLM release {fork} is based on (no v<X.Y.Z> tag reachable from HEAD, "
        f"no release version in vllm/_version.py or PKG-INFO): fetch the tags (`git -C {fork} fetch --tags`) "
        f"or pass --series VERSION")


def resolve_series(fork: Path, patches_root: Path, version: str | None = None) -> Series:
    """The series for ``version`` or, when None, for the fork's detected release."""
    if version is None:
        version, source = detect_version(fork)
        if not (Path(patches_root) / version / "series").is_file():
            have = ", ".join(available_series(patches_root)) or "none"
            raise WorkbenchError(f"the fork is vLLM {version} ({source}) and there is no patches/{version}/series "
                                 f"(have: {have}): pass --series VERSION to try another, or port one "
                                 f"and save it with --refresh")
    return load_series(patches_root, version)


# --------------------------------------------------------------------------------------- state
@dataclass
class SeriesState:
    """Where the fork stands against a series (computed from content, never from a record)."""

    series: Series
    fork: Path
    committed: int  # the first `committed` patches are in HEAD
    applied: int  # the first `applied` patches are in HEAD or the worktree (applied >= committed)
    applied_high: int  # > applied when user edits hide whether patches applied..applied_high-1 are in
    applicable: int  # the first `applicable` patches apply in sequence on HEAD (applicable >= applied)
    user_dirty: list[str]  # series files with edits that no patch explains (never touched)
    conflict: str = ""  # git's message for the first patch that does not apply
    statuses: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)  # series files the applied state has, gone from the tree

    @property
    def pending(self) -> tuple[Patch, ...]:
        return self.series.patches[self.applied:]

    @property
    def reverted_by_revert(self) -> tuple[Patch, ...]:
        return self.series.patches[self.committed:self.applied_high]


@contextmanager
def _temp_index(fork: Path, treeish: str = "HEAD") -> Iterator[dict[str, str]]:
    """A throwaway index holding ``treeish``; yields the env that points git at it."""
    with tempfile.TemporaryDirectory(prefix="wb-index-") as tmp:
        env = {"GIT_INDEX_FILE": str(Path(tmp) / "index")}
        _git(fork, "read-tree", treeish, env=env)
        yield env


def _index_blobs(fork: Path, paths: Sequence[str], env: dict[str, str] | None = None) -> dict[str, str]:
    """path -> "mode blob stage" for ``paths`` in an index (absent paths are left out)."""
    if not paths:
        return {}
    out = _git(fork, "ls-files", "-s", "-z", "--", *paths, env=env).stdout.decode()
    blobs: dict[str, str] = {}
    for entry in filter(None, out.split("\0")):
        meta, path = entry.split("\t", 1)
        blobs[path] = f"{blobs[path]};{meta}" if path in blobs else meta
    return blobs


def _worktree_blobs(fork: Path, paths: Sequence[str]) -> dict[str, str | None]:
    """path -> blob id of the working-tree file (what `git add` would store), None when absent."""
    present = [p for p in paths if (fork / p).is_file() or (fork / p).is_symlink()]
    blobs: dict[str, str | None] = dict.fromkeys(paths)
    if present:
        out = _git(fork, "hash-object", "--", *present).stdout.decode().split()
        blobs.update(zip(present, out, strict=True))
    return blobs


def _blob(meta: str | None) -> str | None:
    return meta.split()[1] if meta else None


def _apply_args(patch: Patch, reverse: bool = False, cached: bool = False, check: bool = False,
                three_way: bool = False) -> list[str]:
    args = ["apply", "--whitespace=nowarn"]
    args += ["--cached"] if cached else []
    args += ["--reverse"] if reverse else []
    args += ["--check"] if check else []
    args += ["--3way"] if three_way else []
    return [*args, str(patch.path.resolve())]


def series_state(fork: Path, series: Series) -> SeriesState:
    """Compute committed / applied / applicable counts and the user-edited series files."""
    fork = fork_toplevel(fork)
    patches = series.patches
    files = list(series.files)
    # 1. How many leading patches are already in HEAD: the largest c whose reverse applies on HEAD.
    committed = 0
    with _temp_index(fork) as env:  # fast path: patch 1 applies on HEAD, so nothing is committed
        first_applies = bool(patches) and _git(fork, *_apply_args(patches[0], cached=True, check=True),
                                               env=env, check=False).returncode == 0
    for c in range(0 if first_applies else len(patches), 0, -1):
        with _temp_index(fork) as env:
            if all(_git(fork, *_apply_args(p, reverse=True, cached=True), env=env, check=False).returncode == 0
                   for p in reversed(patches[:c])):
                committed = c
                break
    # 2. Simulate HEAD + each further pending patch; remember each state's blobs of the series files.
    expected: list[dict[str, str]] = []
    conflict = ""
    with _temp_index(fork) as env:
        expected.append(_index_blobs(fork, files, env))
        applicable = committed
        for p in patches[committed:]:
            result = _git(fork, *_apply_args(p, cached=True), env=env, check=False)
            if result.returncode != 0:
                conflict = f"{p.name}: {_first_line(result.stderr)}"
                break
            applicable += 1
            expected.append(_index_blobs(fork, files, env))
    # 3. Which simulated states explain each file? valid[f] = the k whose content the worktree file has.
    #    Files no state explains carry user edits. The applied count is a k every explained file agrees
    #    on; when user edits hide it (or patches were applied out of order) it is a range, and both ends
    #    are used conservatively: apply starts at the low end, revert at the high end, so a patch under
    #    a user edit is never skipped or half-reverted — the run refuses instead.
    work = _worktree_blobs(fork, files)
    ks = range(len(expected))
    valid = {f: {k for k in ks if work[f] == _blob(expected[k].get(f))} for f in files}
    user_dirty = {f for f in files if not valid[f]}
    agreed = set(ks)
    for f in files:
        agreed &= valid[f] or set(ks)
    if not agreed:  # e.g. patch 2 applied by hand without patch 1: no prefix of the series explains the tree
        agreed = set(ks)
        user_dirty |= {f for f in files if work[f] != _blob(expected[0].get(f))}
    low, high = min(agreed), max(agreed)
    # Staged changes on series files that are neither HEAD nor an explained state are user work too.
    index = _index_blobs(fork, files)
    for f in files:
        staged = index.get(f)
        if staged is not None and (";" in staged or staged.split()[2] != "0"):
            user_dirty.add(f)  # unmerged entries (a merge or 3-way apply in progress)
        elif _blob(staged) not in {_blob(expected[k].get(f)) for k in (0, *valid[f])}:
            user_dirty.add(f)
    applied = committed + low
    applied_high = committed + high
    # A deleted file explains no state, so the count above ignored it: name it instead of counting
    # its patches as applied.
    deleted = sorted(f for f in files if work[f] is None and _blob(expected[low].get(f)) is not None)
    statuses = []
    for i in range(len(patches)):
        if set(patches[i].files) & set(deleted):
            statuses.append(DELETED)
        elif i < committed:
            statuses.append(COMMITTED)
        elif i < applied:
            statuses.append(APPLIED)
        elif i < applied_high:
            statuses.append(UNKNOWN)
        elif i < applicable:
            statuses.append(PENDING)
        else:
            statuses.append(CONFLICT)
    return SeriesState(series=series, fork=fork, committed=committed, applied=applied, applied_high=applied_high,
                       applicable=applicable, user_dirty=sorted(user_dirty), conflict=conflict, statuses=statuses,
                       deleted=deleted)


# --------------------------------------------------------------------------------------- writing
class _Backup:
    """Byte-for-byte copy of files (and their index entries) taken before a run; restores on failure."""

    def __init__(self, fork: Path, paths: Sequence[str]):
        self.fork = fork
        self.paths = list(paths)
        self.content: dict[str, tuple[bytes, int] | None] = {}
        for p in self.paths:
            f = fork / p
            self.content[p] = (f.read_bytes(), f.stat().st_mode) if f.is_file() else None
        self.index = _index_blobs(fork, self.paths)

    def restore_files(self) -> None:
        for p, saved in self.content.items():
            f = self.fork / p
            if saved is None:
                if f.is_file() or f.is_symlink():
                    f.unlink()
                continue
            data, mode = saved
            f.parent.mkdir(parents=True, exist_ok=True)
            if not f.is_file() or f.read_bytes() != data:
                f.write_bytes(data)
            os.chmod(f, mode & 0o7777)

    def restore_index(self) -> None:
        """Put back the user's index entries for the backed-up paths (a --3way apply stages its result)."""
        current = _index_blobs(self.fork, self.paths)
        changed = [p for p in self.paths if current.get(p) != self.index.get(p)]
        if not changed:
            return
        _git(self.fork, "update-index", "--force-remove", "--", *changed)
        lines = []
        for p in changed:
            for meta in filter(None, (self.index.get(p) or "").split(";")):
                lines.append(f"{meta}\t{p}\0")
        if lines:
            _git(self.fork, "update-index", "-z", "--index-info", input="".join(lines).encode())


@dataclass
class RunResult:
    """What a run did (or, with dry_run, would do)."""

    action: str
    version: str
    done: list[str]
    skipped: list[str]
    dry_run: bool = False


def deleted_message(state: SeriesState) -> str:
    names = ", ".join(state.deleted)
    return (f"{names} {'is' if len(state.deleted) == 1 else 'are'} deleted from the fork's working tree but the "
            f"series patches {'it' if len(state.deleted) == 1 else 'them'}: restore "
            f"(`git -C {state.fork} checkout -- {' '.join(state.deleted)}`, then `invoke patch`), or commit the "
            "deletion and port the series")


def _refuse_dirty(state: SeriesState, patches: Sequence[Patch], verb: str) -> None:
    if state.deleted and {f for p in patches for f in p.files} & set(state.deleted):
        raise WorkbenchError(f"refusing to {verb}: " + deleted_message(state))
    touched = {f for p in patches for f in p.files}
    dirty = [f for f in state.user_dirty if f in touched]
    if dirty:
        raise WorkbenchError(
            f"refusing to {verb}: your uncommitted edits are in files the series touches ({', '.join(dirty)}); "
            f"commit or stash them in the fork (`git -C {state.fork} stash`), then rerun — nothing was changed")


def _run_patches(fork: Path, patches: Sequence[Patch], reverse: bool, three_way: bool) -> None:
    """Apply (or reverse) ``patches`` in order to the worktree; on any failure restore every byte."""
    paths = sorted({f for p in patches for f in p.files})
    backup = _Backup(fork, paths)
    try:
        for p in patches:
            result = _git(fork, *_apply_args(p, reverse=reverse, three_way=three_way), check=False)
            if result.returncode != 0:
                raise WorkbenchError(
                    f"{p.name} does not {'revert' if reverse else 'apply'} cleanly "
                    f"({_first_line(result.stderr)}); nothing was changed — "
                    + ("port the patch and save it with `invoke patch --refresh`" if not three_way
                       else "resolve by hand: apply the patch in the fork and `invoke patch --refresh`")
                    + ("" if three_way or reverse else ", or try `invoke patch --3way`"))
        if three_way:
            backup.restore_index()  # keep the user's index as it was; only the worktree changes
    except BaseException:
        backup.restore_files()
        backup.restore_index()
        raise


def _write_record(fork: Path, series: Series, applied: Sequence[Patch]) -> None:
    record = git_path(fork, RECORD)
    record.parent.mkdir(parents=True, exist_ok=True)
    data = {
        "version": series.version,
        "series_dir": str(series.directory.resolve()),
        "patches": [p.name for p in applied],
        "sha256": {p.name: hashlib.sha256(p.path.read_bytes()).hexdigest() for p in applied},
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    tmp = record.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    tmp.replace(record)


def apply_series(fork: Path, series: Series, three_way: bool = False, dry_run: bool = False) -> RunResult:
    """Apply the pending patches of ``series`` (idempotent, atomic, refuses on user-edited files)."""
    fork = fork_toplevel(fork)
    state = series_state(fork, series)
    if state.deleted:
        raise WorkbenchError("refusing to apply the series: " + deleted_message(state))
    done_before = [p.name for p in series.patches[:state.applied]]
    pending = list(state.pending)
    if state.applicable < len(series.patches) and not three_way:
        raise WorkbenchError(
            f"the series for vLLM {series.version} does not apply to this fork ({state.conflict}); nothing was "
            f"changed — port it (edit in the fork, commit, `invoke patch --refresh`), or try `invoke patch --3way`")
    _refuse_dirty(state, pending, "apply the series")
    if not dry_run and pending:
        _run_patches(fork, pending, reverse=False, three_way=three_way)
    if not dry_run:
        _write_record(fork, series, series.patches)
    return RunResult("apply", series.version, [p.name for p in pending], done_before, dry_run)


def revert_series(fork: Path, series: Series, dry_run: bool = False) -> RunResult:
    """Reverse the series' uncommitted patches, last first (atomic; refuses on user-edited files)."""
    fork = fork_toplevel(fork)
    state = series_state(fork, series)
    to_revert = list(reversed(state.reverted_by_revert))
    _refuse_dirty(state, to_revert, "revert the series")
    if not dry_run and to_revert:
        _run_patches(fork, to_revert, reverse=True, three_way=False)
    if not dry_run:
        _write_record(fork, series, series.patches[:state.committed])
    committed = [p.name for p in series.patches[:state.committed]]
    return RunResult("revert", series.version, [p.name for p in to_revert], committed, dry_run)


def check_series(fork: Path, series: Series) -> SeriesState:
    """Raise WorkbenchError (one line) unless the whole series is applied or applies cleanly now."""
    state = series_state(fork, series)
    if state.deleted:
        raise WorkbenchError(deleted_message(state))
    if state.applicable < len(series.patches):
        raise WorkbenchError(f"the series for vLLM {series.version} does not apply ({state.conflict}): "
                             f"port it in the fork and save it with `invoke patch --refresh`")
    _refuse_dirty(state, state.pending, "apply the series")
    return state


def applied_series(fork_path: Path | str) -> list[str]:
    """``<version>/<patch>`` names applied to the fork, for image labels; verified against the tree when
    the recorded series directory still exists, else as last recorded; [] when nothing is recorded."""
    fork = Path(fork_path)
    try:
        record = git_path(fork, RECORD)
        data = json.loads(record.read_text())
    except (WorkbenchError, OSError, ValueError):
        return []
    version = data.get("version", "?")
    series_dir = Path(data.get("series_dir", ""))
    if (series_dir / "series").is_file():
        try:
            series = load_series(series_dir.parent, series_dir.name)
            state = series_state(fork, series)
            return [f"{version}/{p.name}" for p, status in zip(series.patches, state.statuses, strict=True)
                    if status in (COMMITTED, APPLIED)]
        except WorkbenchError:
            pass
    return [f"{version}/{name}" for name in data.get("patches", [])]


# --------------------------------------------------------------------------------------- refresh
def refresh_series(fork: Path, patches_root: Path, version: str, dry_run: bool = False) -> list[str]:
    """Regenerate ``patches/<version>/`` from the fork's commits on top of tag ``v<version>``
    (git format-patch); refuses when that would drop uncommitted fork edits or unsaved patch edits."""
    fork = fork_toplevel(fork)
    base = f"v{version}"
    if _git(fork, "rev-parse", "--verify", "--quiet", f"{base}^{{commit}}", check=False).returncode != 0:
        raise WorkbenchError(f"the fork has no tag {base} to diff against: `git -C {fork} fetch --tags` "
                             f"(or tag the release commit), then rerun")
    tracked = _git_out(fork, "status", "--porcelain", "--untracked-files=no")
    if tracked:
        names = ", ".join(line[3:] for line in tracked.splitlines()[:8])
        raise WorkbenchError(f"the fork has uncommitted edits ({names}); --refresh saves commits only: "
                             f"commit them in the fork (or stash them), then rerun")
    commits = _git_out(fork, "rev-list", "--reverse", f"{base}..HEAD").split()
    if not commits:
        raise WorkbenchError(f"no commits on top of {base} in the fork: commit your changes there first")
    target = Path(patches_root) / version
    _refuse_unsaved_patch_edits(target)
    if dry_run:
        return [_git_out(fork, "log", "-1", "--format=%s", c) for c in commits]
    with tempfile.TemporaryDirectory(prefix="wb-refresh-") as tmp:
        out = _git_out(fork, "-c", "core.abbrev=12", "format-patch", "--zero-commit", "--no-signature",
                       "--full-index", "-o", tmp, f"{base}..HEAD")
        names = [Path(line).name for line in out.splitlines() if line.strip()]
        target.mkdir(parents=True, exist_ok=True)
        for old in target.glob("*.patch"):
            old.unlink()
        for name in names:
            shutil.copyfile(Path(tmp) / name, target / name)
    header = (f"# Patch series for vLLM {version}, applied in this order by `invoke patch`.\n"
              f"# Generated by `invoke patch --refresh` from the fork's commits on top of {base}.\n")
    (target / "series").write_text(header + "".join(f"{n}\n" for n in names))
    return names


def _refuse_unsaved_patch_edits(target: Path) -> None:
    """Refuse to overwrite a series directory whose files differ from the project's last commit."""
    if not target.exists():
        return
    result = subprocess.run(["git", "status", "--porcelain", "--", "."], cwd=target, capture_output=True, text=True)
    if result.returncode != 0:
        if any(target.iterdir()):
            raise WorkbenchError(f"{target} is not in a git repository, so --refresh cannot keep its old files: "
                                 f"move it aside first")
        return
    if result.stdout.strip():
        raise WorkbenchError(f"{target} has uncommitted changes that --refresh would overwrite: commit them "
                             f"in the project first (or `git stash`), then rerun")
