"""Applying, reverting and checking a patch series on the fork, without ever losing a user edit.

Patches go into the fork's *working tree* with plain ``git apply`` (exact context, never fuzzy; ``--3way``
only when asked) and the user's index is left as it was.

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
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from workbench.errors import WorkbenchError
from workbench.fork.checkout import git_path, require_checkout
from workbench.fork.series import Patch, Series, load_series
from workbench.git import first_line as _first_line
from workbench.git import run as _git

RECORD = "workbench/patches.json"  # inside the fork's git dir: `git rev-parse --git-path` resolves it

# Patch states shown by `invoke patch.status`.
COMMITTED = "committed"  # part of the fork's HEAD (e.g. the user committed it)
APPLIED = "applied"  # in the working tree, not committed
PENDING = "pending"  # applies cleanly on top of what is applied
CONFLICT = "conflict"  # does not apply (the fork moved on, or an earlier patch is missing)
UNKNOWN = "unknown"  # your edits in its files hide whether it is applied
DELETED = "file deleted"  # a file it patches is gone from the working tree


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

    def to_dict(self) -> dict:
        """What `invoke patch.status` shows, as data (its --json): each patch's state and what blocks the series."""
        return {"series": self.series.version, "directory": str(self.series.directory), "fork": str(self.fork),
                "patches": [{"name": p.name, "subject": p.subject, "state": s, "files": list(p.files)}
                            for p, s in zip(self.series.patches, self.statuses, strict=True)],
                "committed": self.committed, "applied": self.applied, "deleted": list(self.deleted),
                "conflict": self.conflict, "user_dirty": list(self.user_dirty)}


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
    fork = require_checkout(fork)
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
            f"(`git -C {state.fork} checkout -- {' '.join(state.deleted)}`, then `invoke patch.apply`), or commit the "
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
                    + ("port the patch and save it with `invoke patch.refresh`" if not three_way
                       else "resolve by hand: apply the patch in the fork and `invoke patch.refresh`")
                    + ("" if three_way or reverse else ", or try `invoke patch.apply --3way`"))
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
    fork = require_checkout(fork)
    state = series_state(fork, series)
    if state.deleted:
        raise WorkbenchError("refusing to apply the series: " + deleted_message(state))
    done_before = [p.name for p in series.patches[:state.applied]]
    pending = list(state.pending)
    if state.applicable < len(series.patches) and not three_way:
        raise WorkbenchError(
            f"the series for vLLM {series.version} does not apply to this fork ({state.conflict}); nothing was "
            f"changed — port it (edit in the fork, commit, `invoke patch.refresh`), or try `invoke patch.apply --3way`")
    _refuse_dirty(state, pending, "apply the series")
    if not dry_run and pending:
        _run_patches(fork, pending, reverse=False, three_way=three_way)
    if not dry_run:
        _write_record(fork, series, series.patches)
    return RunResult("apply", series.version, [p.name for p in pending], done_before, dry_run)


def revert_series(fork: Path, series: Series, dry_run: bool = False) -> RunResult:
    """Reverse the series' uncommitted patches, last first (atomic; refuses on user-edited files)."""
    fork = require_checkout(fork)
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
                             f"port it in the fork and save it with `invoke patch.refresh`")
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
    if not isinstance(data, dict):  # a damaged record must not stop `up` or `commit`; patch.status reports
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
