"""docker-compose.yml as Compose itself resolves it: `docker compose config` (v2) or `docker-compose config` (v1).

Compose decides what the project's ``.env`` contributes, how variables interpolate, which override files it
merges and which profiles exist; asking it (rather than re-implementing it) is what makes `invoke up` and
`docker compose up` give the same container. Compose v1 takes most of a second to answer, and `shell` opens the
spec at every call, so the answer is kept under the user's cache, keyed by everything it depends on: the files
Compose reads and the values of the variables they name. Where no Compose is installed (a GPU node, a CI image),
compose.py's own reader is used, which refuses what it does not implement.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from workbench.errors import WorkbenchError

# The file names Compose picks up by itself in a project folder, with the override each merges in.
DEFAULT_FILES = {
    "compose.yaml": "compose.override.yaml", "compose.yml": "compose.override.yml",
    "docker-compose.yml": "docker-compose.override.yml", "docker-compose.yaml": "docker-compose.override.yaml",
}
# Where the docker CLI looks for its compose plugin (Compose v2), besides ~/.docker/cli-plugins.
PLUGIN_DIRS = ("/usr/local/lib/docker/cli-plugins", "/usr/local/libexec/docker/cli-plugins",
               "/usr/lib/docker/cli-plugins", "/usr/libexec/docker/cli-plugins")
RESOLVERS = ("auto", "compose", "builtin")
# Compose's variable syntax: $$ (a literal $), ${NAME}, ${NAME<op>ARG} with :- - :? ? :+ +, and $NAME.
VARIABLE = re.compile(
    r"\$(?:(?P<escaped>\$)|\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\}"
    r"|(?P<named>[A-Za-z_][A-Za-z0-9_]*))"
)


def compose_command() -> tuple[str, ...] | None:
    """The Compose on this host, found without running anything: the docker CLI's plugin (v2), else
    docker-compose (v1); None without either."""
    docker = shutil.which("docker")
    plugin_dirs = [Path.home() / ".docker" / "cli-plugins", *map(Path, PLUGIN_DIRS)]
    if docker and any((d / "docker-compose").is_file() for d in plugin_dirs):
        return (docker, "compose")
    v1 = shutil.which("docker-compose")
    return (v1,) if v1 else None


def choose(setting: str) -> tuple[str, ...] | None:
    """The Compose to resolve the file with under ``workbench.compose_resolver``; None: compose.py's reader."""
    if setting not in RESOLVERS:
        raise WorkbenchError(f"workbench.compose_resolver is {setting!r}: use {', '.join(RESOLVERS)}")
    if setting == "builtin":
        return None
    command = compose_command()
    if command is None and setting == "compose":
        raise WorkbenchError("workbench.compose_resolver is 'compose' but neither `docker compose` nor "
                             "docker-compose is installed: install Compose, or set it to auto")
    return command


def project_files(path: Path) -> list[Path]:
    """The files Compose reads for ``path``: the file itself, the override it merges in by itself when the file
    has a default name, and the project's .env."""
    files = [path]
    override = DEFAULT_FILES.get(path.name)
    if override and (path.parent / override).is_file():
        files.append(path.parent / override)
    if (path.parent / ".env").is_file():
        files.append(path.parent / ".env")
    return files


def _cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "vllm-workbench" / "compose-config"


def _key(command: tuple[str, ...], files: list[Path], env: Mapping[str, str]) -> str:
    texts = [f.read_bytes() for f in files]
    names = sorted({m.group("braced") or m.group("named") for t in texts
                    for m in VARIABLE.finditer(t.decode("utf-8", "replace")) if not m.group("escaped")})
    h = hashlib.sha256(repr(command).encode())
    for f, text in zip(files, texts, strict=True):
        h.update(str(f).encode() + b"\0" + text + b"\0")
    for name in names:
        h.update(f"{name}={env.get(name)!r}\0".encode())
    return h.hexdigest()[:24]


def resolve(command: tuple[str, ...], path: Path, env: Mapping[str, str]) -> dict[str, Any]:
    """The compose document as Compose resolves it for the project folder of ``path``, every profile active
    (the workbench picks its service by name). Kept under the user's cache by what it depends on."""
    import yaml

    files = project_files(path)
    cached = _cache_dir() / f"{_key(command, files, env)}.yaml"
    with contextlib.suppress(FileNotFoundError):  # absent, or pruned by another process just now: ask Compose
        return yaml.safe_load(cached.read_text())
    profiles = _profiles(files)
    argv = [*command]
    if path.name not in DEFAULT_FILES:
        argv += ["-f", str(path)]  # a named file: Compose merges no override then, as `docker compose -f` would
    for profile in profiles:
        argv += ["--profile", profile]
    argv.append("config")
    try:
        done = subprocess.run(argv, cwd=path.parent, env=dict(env), capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise WorkbenchError(f"{' '.join(command)} config did not answer ({err}): fix Compose, or set "
                             "workbench.compose_resolver to builtin") from None
    if done.returncode != 0:
        lines = [ln for ln in done.stderr.splitlines() if ln.strip()] or ["no message"]
        raise WorkbenchError(f"Compose cannot resolve {path.name}: {lines[-1].strip()}: fix the file (or .env)")
    doc = yaml.safe_load(done.stdout) or {}
    cached.parent.mkdir(parents=True, exist_ok=True)
    # A temporary of its own per writer (threads of one process share a pid), renamed over the answer:
    # a concurrent `up` reads the whole answer or none, and no writer renames away another's file.
    fd, tmp = tempfile.mkstemp(dir=cached.parent, prefix=f".{cached.stem}.", suffix=".tmp")
    with os.fdopen(fd, "w") as fh:
        fh.write(done.stdout)
    os.replace(tmp, cached)
    _prune(cached.parent)
    return doc


def _prune(folder: Path, keep: int = 64) -> None:
    """Keep the newest answers only: each edit of the files or the variables adds one."""
    stamped = []
    for answer in folder.glob("*.yaml"):
        with contextlib.suppress(FileNotFoundError):  # another process pruned it first
            stamped.append((answer.stat().st_mtime, answer))
    for _, old in sorted(stamped, reverse=True)[keep:]:
        old.unlink(missing_ok=True)


def _profiles(files: list[Path]) -> list[str]:
    """Every profile a service of the compose files names (read before interpolation: profile names are plain)."""
    import yaml

    found: list[str] = []
    for f in files:
        if f.name == ".env":
            continue
        try:
            doc = yaml.safe_load(f.read_text()) or {}
        except yaml.YAMLError as err:
            raise WorkbenchError(f"{f.name} is not valid YAML ({str(err).splitlines()[0]}): fix the file") from err
        for svc in (doc.get("services") or {}).values():
            for p in (svc or {}).get("profiles") or ():
                if str(p) not in found:
                    found.append(str(p))
    return found
