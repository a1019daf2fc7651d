"""The vLLM fork as a git submodule: what it is (version, commit, branch, dirty files, patches, the
matching precompiled wheel) and switching it to another fork URL / ref without losing local work."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from workbench.errors import WorkbenchError
from workbench.fork import install, patches
from workbench.git import fork_checkout_fix, submodule_of
from workbench.git import run as run_git

SUBMODULE = "vllm"
UPSTREAM = "https://github.com/vllm-project/vllm.git"
PINNED_COMMIT = "72506c98349d6bcd32b4e33eec7b5513453c1502"
PINNED_VERSION = "0.13.0"  # the release PINNED_COMMIT is tagged with
_FILE_OK = ("-c", "protocol.file.allow=always")  # local fork URLs (file:// or paths), refused by default since git 2.38


def _git(repo: Path, *args: str, check: bool = True) -> str:
    return run_git(repo, *_FILE_OK, *args, check=check).stdout.decode(errors="replace").strip()


@dataclass
class SourceInfo:
    path: Path
    url: str
    url_source: str  # ".gitmodules" for the project's submodule, else the checkout's remote
    pinned: str  # the gitlink the project records ("" for a checkout outside the project)
    version: str
    version_source: str
    commit: str
    branch: str | None  # None: detached HEAD (the usual state of a submodule)
    dirty: list[str] = field(default_factory=list)
    applied: list[str] = field(default_factory=list)
    wheel: str = ""


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


def require_initialised(fork: Path) -> Path:
    """The fork's path, or the one-line fix when the submodule is missing or not initialised."""
    if not fork.is_dir() or not (fork / ".git").exists() or not (fork / "vllm").is_dir():
        raise WorkbenchError(f"the vLLM fork at {fork} is not checked out", fix=fork_checkout_fix(fork))
    return fork


def dirty_files(fork: Path) -> list[str]:
    """Modified, staged and untracked paths (porcelain), ignored files excluded."""
    out = subprocess.run(["git", "status", "--porcelain=v1", "-z", "--untracked-files=all"], cwd=fork,
                         capture_output=True, text=True).stdout
    return [entry[3:] for entry in out.split("\0") if len(entry) > 3]


def source_info(root: Path, fork: Path, patches_root: Path, wheel_dir: Path) -> SourceInfo:
    """Everything `invoke source` shows, computed from the repositories."""
    require_initialised(fork)
    try:
        version, vsource = patches.detect_version(fork)
    except WorkbenchError:
        version, vsource = "unknown", "no v* tag, _version.py or PKG-INFO"
    branch = _git(fork, "symbolic-ref", "--quiet", "--short", "HEAD", check=False) or None
    url, url_source = fork_url(root, fork)
    pinned = pinned_commit(root) if is_project_submodule(root, fork) else ""
    info = SourceInfo(path=fork, url=url, url_source=url_source, pinned=pinned, version=version,
                      version_source=vsource, commit=_git(fork, "rev-parse", "HEAD"), branch=branch,
                      dirty=dirty_files(fork), applied=patches.applied_series(fork))
    try:
        wheel = install.resolve_wheel(fork, version, None, wheel_dir)
        where = wheel.location or install.wheel_url_for_commit(wheel.commit or "")
        info.wheel = f"{where} ({wheel.reason})"
        changed = install.compiled_changes(fork, wheel.commit) if wheel.commit else []
        if changed:
            info.wheel += f" — but csrc/ differs ({len(changed)} file(s)): needs `invoke install --full`"
    except WorkbenchError as err:
        info.wheel = f"none found: {err}"
    return info


def switch_fork(root: Path, fork: Path, url: str | None, ref: str | None) -> str:
    """Point the submodule at ``url`` (recorded in .gitmodules) and check out ``ref`` detached. Refuses
    when the fork has uncommitted work; returns the new HEAD commit."""
    if fork.is_dir() and (fork / ".git").exists():
        dirty = dirty_files(fork)
        if dirty:
            shown = ", ".join(dirty[:6]) + (" ..." if len(dirty) > 6 else "")
            raise WorkbenchError(f"the fork has uncommitted work ({shown}): commit or stash it in {fork} "
                                 f"before switching — nothing was changed")
    submodule = is_project_submodule(root, fork)
    if not submodule and not (fork / ".git").exists():
        raise WorkbenchError(f"no vLLM checkout at {fork} (workbench.fork), and it is not the project's submodule",
                             fix=fork_checkout_fix(fork))
    if url and submodule:
        _git(root, "config", "-f", ".gitmodules", f"submodule.{SUBMODULE}.url", url)
        _git(root, "submodule", "sync", "--", SUBMODULE)
    if submodule and not (fork / ".git").exists():
        _git(root, "submodule", "update", "--init", "--", SUBMODULE)
    if ref:
        source = url or fork_url(root, fork)[0]
        _git(fork, "fetch", "--no-tags", source, ref)
        _git(fork, "checkout", "--detach", "FETCH_HEAD")
        # The fork's release tags (version detection); a fork whose tag differs from one already here
        # is not forced over it (exit status ignored: the other tags still arrive).
        _git(fork, "fetch", "--no-tags", source, "refs/tags/v*:refs/tags/v*", check=False)
    return _git(fork, "rev-parse", "HEAD")
