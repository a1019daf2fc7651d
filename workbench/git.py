"""Running git for the workbench's modules: one place for the environment, errors and timeouts."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from workbench.errors import WorkbenchError


def first_line(data: bytes | str) -> str:
    text = data.decode(errors="replace") if isinstance(data, bytes) else data
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[0].strip() if lines else "(no message)"


def run(repo: Path, *args: str, env: dict[str, str] | None = None, check: bool = True,
        input: bytes | None = None) -> subprocess.CompletedProcess:
    """git in ``repo``, bytes in and out, never prompting; a failure raises WorkbenchError when ``check``."""
    full_env = {**os.environ, "GIT_TERMINAL_PROMPT": "0", **(env or {})}
    result = subprocess.run(["git", *args], cwd=repo, env=full_env, input=input, capture_output=True)
    if check and result.returncode != 0:
        raise WorkbenchError(f"git {' '.join(args)} failed in {repo}: {first_line(result.stderr)}")
    return result


def output(repo: Path, *args: str, strip: bool = True) -> str | None:
    """git's stdout as text, or None when git fails, is missing or hangs (a query, never fatal)."""
    try:
        result = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, timeout=60,
                                env={**os.environ, "GIT_TERMINAL_PROMPT": "0"})
    except (OSError, subprocess.TimeoutExpired):
        return None
    if result.returncode != 0:
        return None
    return result.stdout.strip() if strip else result.stdout


def toplevel(path: Path) -> Path | None:
    """The root of the git checkout ``path`` is in (None outside any, or when ``path`` is no folder)."""
    if not Path(path).is_dir():
        return None
    top = output(path, "rev-parse", "--show-toplevel")
    return Path(top) if top else None


def status(repo: Path) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(tracked paths with uncommitted changes, staged or not; untracked paths), ignored files left out."""
    out = output(repo, "status", "--porcelain=v1", "-z", "--untracked-files=all", strip=False) or ""
    changed: list[str] = []
    untracked: list[str] = []
    entries = iter(out.split("\0"))
    for entry in entries:
        if len(entry) < 4:
            continue
        code, path = entry[:2], entry[3:]
        if code == "??":
            untracked.append(path)
            continue
        changed.append(path)
        if code[0] in "RC":  # a rename or copy: its source path follows as the next entry
            next(entries, None)
    return tuple(changed), tuple(untracked)


def submodule_of(path: Path) -> tuple[Path, str] | None:
    """(project, submodule path) when ``path`` is a submodule its enclosing project's .gitmodules declares,
    else None (the fork is a checkout of the user's own, outside any project's submodules)."""
    path = Path(path).absolute()
    for project in path.parents:
        gitmodules = project / ".gitmodules"
        if not gitmodules.is_file():
            continue
        listed = output(project, "config", "-f", ".gitmodules", "--get-regexp", r"^submodule\..*\.path$") or ""
        wanted = path.relative_to(project).as_posix()
        if any(line.split(" ", 1)[-1] == wanted for line in listed.splitlines()):
            return project, wanted
    return None


def fork_checkout_fix(fork: Path) -> str:
    """How to get a vLLM checkout at ``fork``: initialise the submodule when it is one, else clone or
    point workbench.fork at one (a custom fork path is no submodule: `git submodule update` can't fill it)."""
    found = submodule_of(fork)
    if found is not None:
        project, rel = found
        where = "" if project == Path.cwd() else f" (in {project})"
        return (f"run `git submodule update --init {rel}`{where}, or set workbench.fork to your vLLM checkout")
    return (f"clone your vLLM fork there (git clone URL {fork}), or set workbench.fork (invoke.yaml or "
            "INVOKE_WORKBENCH_FORK) to your vLLM checkout")
