"""The vLLM fork: its state as one value (``ForkState``: initialised, commit, branch, dirty files, the
patches applied), what `invoke source` shows beside it (version, URL, the project's pin, the matching
precompiled wheel), and switching it to another fork URL / ref without losing local work."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from workbench import git
from workbench.errors import WorkbenchError
from workbench.fork import checkout, install, patches, series
from workbench.git import run as run_git
from workbench.git import submodule_of

SUBMODULE = "vllm"
UPSTREAM = "https://github.com/vllm-project/vllm.git"
PINNED_COMMIT = "72506c98349d6bcd32b4e33eec7b5513453c1502"
PINNED_VERSION = "0.13.0"  # the release PINNED_COMMIT is tagged with
_FILE_OK = ("-c", "protocol.file.allow=always")  # local fork URLs (file:// or paths), refused by default since git 2.38


def _git(repo: Path, *args: str, check: bool = True) -> str:
    return run_git(repo, *_FILE_OK, *args, check=check).stdout.decode(errors="replace").strip()


@dataclass(frozen=True)
class ForkState:
    """The fork as git sees it, read from the repository each time (``fork_state``); every task that asks
    "is the fork there, at which commit, with which edits and patches" reads this one value."""

    path: Path
    initialised: bool  # the folder holds vLLM's source (checkout.initialised)
    commit: str | None = None  # HEAD; None when the folder is no git checkout of its own
    branch: str | None = None  # None: detached HEAD (the usual state of a submodule)
    dirty_files: tuple[str, ...] = ()  # tracked paths with uncommitted changes, staged or not
    untracked: tuple[str, ...] = ()  # untracked paths, ignored ones left out
    patches: tuple[str, ...] = ()  # the patch series applied, as <version>/<patch> (verified against the tree)

    @property
    def dirty(self) -> bool:
        return bool(self.dirty_files)

    @property
    def short(self) -> str:
        return (self.commit or "unknown")[:12]

    def require(self, git_checkout: bool = True) -> ForkState:
        """This state when the fork is usable — initialised, and (``git_checkout``) a git checkout of its
        own, which patching and installing need; mounting it needs only the source — else one line with
        the fix."""
        why = checkout.problem(self.path, self.initialised, self.commit is not None, need_git=git_checkout)
        if why:
            raise WorkbenchError(why, fix=checkout.fix(self.path))
        return self


def fork_state(path: Path) -> ForkState:
    """The fork's state, every fact through git (never raises: a missing fork is ``initialised=False``)."""
    path = Path(path)
    initialised = checkout.initialised(path)
    commit = checkout.head(path)
    if commit is None:
        return ForkState(path, initialised)
    branch = git.output(path, "symbolic-ref", "--quiet", "--short", "HEAD") or None
    changed, untracked = git.status(path)
    return ForkState(path, initialised, commit, branch, changed, untracked, tuple(patches.applied_series(path)))


@dataclass(frozen=True)
class SourceInfo:
    """What `invoke source` shows: the fork's state and where it comes from."""

    state: ForkState
    url: str
    url_source: str  # ".gitmodules" for the project's submodule, else the checkout's remote
    pinned: str  # the gitlink the project records ("" for a checkout outside the project)
    version: str
    version_source: str
    wheel: str = ""

    def to_dict(self) -> dict:
        """What `invoke source` shows, as data (its --json)."""
        state = self.state
        return {"path": str(state.path), "url": self.url, "url_source": self.url_source, "version": self.version,
                "version_source": self.version_source, "commit": state.commit, "pinned": self.pinned,
                "branch": state.branch, "detached": state.branch is None, "dirty_files": list(state.dirty_files),
                "untracked_files": list(state.untracked), "patches_applied": list(state.patches),
                "precompiled_wheel": self.wheel}


def submodule_url(root: Path, name: str = SUBMODULE) -> str:
    return _git(root, "config", "-f", ".gitmodules", f"submodule.{name}.url", check=False)


def is_project_submodule(root: Path, fork: Path) -> bool:
    """True when the fork is the project's own submodule (not a checkout elsewhere)."""
    found = submodule_of(fork)
    return found is not None and found[0].resolve() == Path(root).resolve()


def fork_url(root: Path, fork: Path) -> tuple[str, str]:
    """(URL, where it was read) of the fork: the project's .gitmodules entry for its submodule, else the
    checkout's own remote (origin, or its first remote)."""
    if is_project_submodule(root, fork):
        url = submodule_url(root)
        return url, ".gitmodules" if url else ""
    remotes = _git(fork, "remote", check=False).split()
    for name in ["origin", *remotes] if remotes else []:
        url = _git(fork, "remote", "get-url", name, check=False)
        if url:
            return url, f"remote {name}"
    return "", ""


def pinned_commit(root: Path, name: str = SUBMODULE) -> str:
    """The commit the project's index records for the submodule (its gitlink)."""
    out = _git(root, "ls-files", "-s", "--", name, check=False).split()
    return out[1] if len(out) >= 2 and out[0] == "160000" else ""


def _wheel_line(fork: Path, version: str, wheel_dir: Path) -> str:
    try:
        wheel = install.resolve_wheel(fork, version, None, wheel_dir)
    except WorkbenchError as err:
        return f"none found: {err}"
    line = f"{wheel.location or install.wheel_url_for_commit(wheel.commit or '')} ({wheel.reason})"
    try:
        changed = install.compiled_changes(fork, wheel.commit) if wheel.commit else []
    except WorkbenchError as err:
        return f"{line} — {err}"
    if changed:
        line += f" — but csrc/ differs ({len(changed)} file(s)): needs `invoke install --full`"
    return line


def source_info(root: Path, fork: Path, wheel_dir: Path) -> SourceInfo:
    """Everything `invoke source` shows, computed from the repositories."""
    state = fork_state(fork).require()
    try:
        version, vsource = series.detect_version(fork)
    except WorkbenchError:
        version, vsource = "unknown", "no v* tag, _version.py or PKG-INFO"
    url, url_source = fork_url(root, fork)
    pinned = pinned_commit(root) if is_project_submodule(root, fork) else ""
    return SourceInfo(state=state, url=url, url_source=url_source, pinned=pinned, version=version,
                      version_source=vsource, wheel=_wheel_line(fork, version, wheel_dir))


def switch_fork(root: Path, fork: Path, url: str | None, ref: str | None) -> str:
    """Point the submodule at ``url`` (recorded in .gitmodules) and check out ``ref`` detached. Refuses
    when the fork has uncommitted work; returns the new HEAD commit."""
    state = fork_state(fork)
    work = state.dirty_files + state.untracked
    if work:
        shown = ", ".join(work[:6]) + (" ..." if len(work) > 6 else "")
        raise WorkbenchError(f"the fork has uncommitted work ({shown}): commit or stash it in {fork} "
                             f"before switching — nothing was changed")
    submodule = is_project_submodule(root, fork)
    if not submodule and state.commit is None:
        raise WorkbenchError(f"no vLLM checkout at {fork} (workbench.fork), and it is not the project's submodule",
                             fix=checkout.fix(fork))
    if url and submodule:
        _git(root, "config", "-f", ".gitmodules", f"submodule.{SUBMODULE}.url", url)
        _git(root, "submodule", "sync", "--", SUBMODULE)
    if submodule and state.commit is None:
        _git(root, "submodule", "update", "--init", "--", SUBMODULE)
    if ref:
        source = url or fork_url(root, fork)[0]
        _git(fork, "fetch", "--no-tags", source, ref)
        _git(fork, "checkout", "--detach", "FETCH_HEAD")
        # The fork's release tags (version detection); a fork whose tag differs from one already here
        # is not forced over it (exit status ignored: the other tags still arrive).
        _git(fork, "fetch", "--no-tags", source, "refs/tags/v*:refs/tags/v*", check=False)
    return _git(fork, "rev-parse", "HEAD")
