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
