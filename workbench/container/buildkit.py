"""Building the dev image through BuildKit, the engine's default builder since Docker 23, where the host has it.

The docker SDK talks to the daemon's classic builder only (BuildKit needs a gRPC session the SDK does not
speak), so a BuildKit build goes through the docker CLI: ``docker buildx build --load`` where the buildx plugin
is installed, else a CLI older than 23 whose own builder is BuildKit under ``DOCKER_BUILDKIT=1`` (Debian's
docker.io 20.10). The context is the tar the workbench assembles itself, on stdin, as for the SDK.

Dockerfile.dev itself has no BuildKit syntax: Compose v1 and the devcontainer CLI build it with whatever builder
they use, and the classic builder cannot parse ``RUN --mount``. A ``# cache mounts (BuildKit): TARGET ...`` line
names the caches of the RUN below it; ``buildkit_dockerfile`` turns them into ``--mount=type=cache`` options
for the builds the workbench runs through BuildKit, so apt's and pip's downloads outlive the build.
"""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

# "# cache mounts (BuildKit): /var/cache/apt /var/lib/apt/lists" above a RUN.
_CACHE_NOTE = re.compile(r"^#\s*cache mounts \(BuildKit\):\s*(?P<targets>\S.*)$")
# BuildKit's plain progress: "#7 [3/9] RUN sh ..." opens a step.
_STEP = re.compile(r"^#\d+ \[(?:[^\]]*? )?(\d+)/(\d+)\] (.*)")


@dataclass(frozen=True)
class Builder:
    """A docker CLI that builds with BuildKit: the argv before the build options, and its environment."""

    argv: tuple[str, ...]
    env: tuple[tuple[str, str], ...] = ()
    why: str = ""

    def command(self) -> str:
        prefix = " ".join(f"{k}={v}" for k, v in self.env)
        return f"{prefix} {' '.join(self.argv)}".strip()


def buildkit_dockerfile(text: str) -> str:
    """The Dockerfile as BuildKit builds it: each RUN right below a ``# cache mounts (BuildKit):`` line gets a
    locked cache mount per target (locked: two builds never write one apt cache at once)."""
    out: list[str] = []
    pending: list[str] = []
    for line in text.splitlines(keepends=True):
        if m := _CACHE_NOTE.match(line.strip()):
            pending = m.group("targets").split()
        elif pending and line.startswith("RUN "):
            mounts = " ".join(f"--mount=type=cache,target={t},sharing=locked" for t in pending)
            line = f"RUN {mounts} {line[4:]}"
            pending = []
        elif line.strip() and not line.lstrip().startswith("#"):
            pending = []  # the note belongs to the instruction right below it only
        out.append(line)
    return "".join(out)


def _run(argv: list[str]) -> subprocess.CompletedProcess | None:
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None


def _docker_clis() -> list[str]:
    """Every `docker` executable on PATH, in PATH order (a host may have a new CLI without buildx in front of
    its distribution's older one)."""
    seen, found = set(), []
    for folder in os.environ.get("PATH", "").split(os.pathsep):
        path = Path(folder or ".") / "docker"
        if path.is_file() and os.access(path, os.X_OK) and path.resolve() not in seen:
            seen.add(path.resolve())
            found.append(str(path))
    return found


def find_builder() -> Builder | None:
    """The first docker CLI on this host that builds with BuildKit, or None (the classic builder then)."""
    for cli in _docker_clis():
        buildx = _run([cli, "buildx", "version"])
        if buildx is not None and buildx.returncode == 0:
            return Builder((cli, "buildx", "build", "--load"), (), f"{cli} buildx ({buildx.stdout.strip()[:40]})")
        version = _run([cli, "version", "--format", "{{.Client.Version}}"])
        major = re.match(r"(\d+)\.", version.stdout.strip()) if version is not None else None
        if major and int(major.group(1)) < 23:
            # Before 23 the CLI carries BuildKit itself; from 23 on `docker build` needs the buildx plugin.
            return Builder((cli, "build"), (("DOCKER_BUILDKIT", "1"),),
                           f"{cli} {version.stdout.strip()} with DOCKER_BUILDKIT=1")
    return None


def build_argv(builder: Builder, tag: str, dockerfile: str, buildargs: dict[str, str], labels: dict[str, str],
               no_cache: bool, iidfile: str) -> list[str]:
    argv = [*builder.argv, "--progress=plain", "-f", dockerfile, "-t", tag, "--iidfile", iidfile]
    for key, value in sorted(buildargs.items()):
        argv += ["--build-arg", f"{key}={value}"]
    for key, value in sorted(labels.items()):
        argv += ["--label", f"{key}={value}"]
    if no_cache:
        argv.append("--no-cache")
    return [*argv, "-"]  # the context: a tar on stdin


def run_build(builder: Builder, argv: list[str], context: bytes, on_line: Callable[[str], None],
              docker_host: str | None = None) -> tuple[int, list[str], str]:
    """Run a BuildKit build with the context tar on stdin, each output line to ``on_line``; returns (exit code,
    the log, the step that ran last)."""
    env = {**os.environ, **dict(builder.env)}
    if docker_host:
        env["DOCKER_HOST"] = docker_host
    log: list[str] = []
    step = "before the first step"
    with tempfile.TemporaryFile() as stdin:
        stdin.write(context)
        stdin.seek(0)
        proc = subprocess.Popen(argv, stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env,
                                text=True, errors="replace")
        assert proc.stdout is not None
        for raw in proc.stdout:
            line = raw.rstrip("\n")
            if not line.strip():
                continue
            log.append(line)
            if m := _STEP.match(line):
                step = f"step {m.group(1)}/{m.group(2)} ({m.group(3)[:80]})"
            on_line(line)
        code = proc.wait()
    return code, log, step
