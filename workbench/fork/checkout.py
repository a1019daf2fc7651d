"""Whether a folder holds the user's vLLM fork, and as what: the one rule (and its one-line errors) that
the fork's state (``source.ForkState``), the patch series and the install all go by.

Two facts: *initialised* — the folder holds vLLM's source (its ``vllm/`` package; an uninitialised
submodule is an empty folder), enough to mount it in the dev container; and *a git checkout of its own* —
git's top level is the folder itself, which patching, refreshing and reading commits need. The second
matters because an sdist copied into the project's ``vllm/`` folder sits inside the *project's* repository:
git would answer for the project (its HEAD, its index) there.
"""

from __future__ import annotations

from pathlib import Path

from workbench import git
from workbench.errors import WorkbenchError


def initialised(path: Path) -> bool:
    """True when the folder holds vLLM's source (not a missing or empty, uninitialised submodule)."""
    return (Path(path) / "vllm").is_dir()


def head(path: Path) -> str | None:
    """The HEAD commit when ``path`` is a git checkout of its own, else None."""
    top = git.toplevel(path)
    if top is None or top.resolve() != Path(path).resolve():
        return None
    return git.output(path, "rev-parse", "--verify", "--quiet", "HEAD^{commit}") or None


def problem(path: Path, is_initialised: bool, is_checkout: bool, need_git: bool = True) -> str | None:
    """What is wrong with the fork at ``path`` for a task (None: nothing); the fix is ``fix(path)``."""
    if not is_initialised:
        return f"the vLLM fork at {path} is not checked out"
    if need_git and not is_checkout:
        return f"{path} is not a vLLM git checkout"
    return None


def fix(path: Path) -> str:
    return git.fork_checkout_fix(Path(path))


def require_checkout(path: Path) -> Path:
    """``path`` when it is a vLLM git checkout of its own, else the one-line error with the fix."""
    path = Path(path)
    why = problem(path, initialised(path), head(path) is not None)
    if why:
        raise WorkbenchError(why, fix=fix(path))
    return path


def git_path(fork: Path, name: str) -> Path:
    """A path inside the fork's git dir (works for submodules and worktrees, whose .git is a file)."""
    out = git.run(fork, "rev-parse", "--git-path", name).stdout.decode().strip()
    path = Path(out)
    return path if path.is_absolute() else (fork / path)
