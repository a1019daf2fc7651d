"""Where the steps that run "inside" run: the dev container, or this host's own Python.

Every such step (install, rebuild, the bench runs and their environment capture, trace, tune) is an
argv with an environment and a working folder, run through one ``Runtime``: ``execute`` streams its
output and leaves the exit code. ``Places`` says where the project's folders are as that runtime sees
them, so plans are written once and run on either side.

- ``docker`` (default): the dev container docker-compose.yml declares, resolved and connected once
  (``workbench.container.devcontainer.DevContainer``); its places come from the compose file's bind mounts.
- ``host``: the interpreter ``workbench.python`` on this machine (a GPU node without Docker, a cloud
  notebook); its places are the checkout's own folders.
"""

from __future__ import annotations

import os
import queue
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from workbench.config import Settings
from workbench.errors import WorkbenchError

RUNTIMES = ("docker", "host")
# The guest scripts (stdlib-only files run by path where the steps run) live in this package folder.
GUEST = "guest"

Writer = Callable[[bytes], object]


@dataclass(frozen=True)
class Places:
    """The project's folders as one runtime names them (container paths need not exist on this host)."""

    fork: str
    kernels: str  # the custom_kernels project folder (its package under src/)
    patches: str
    results: str
    wheels: str
    guest: str  # workbench/guest: scripts run by path in the runtime
    state: str  # where install records live (inside the container's image, or beside the host's venv)
    hf_cache: str
    ccache: str

    @property
    def install_record(self) -> str:
        return f"{self.state}/install.json"

    @property
    def kernels_import_root(self) -> str:
        """Where ``import custom_kernels`` finds the package (what its editable install puts on the path)."""
        return f"{self.kernels}/src"

    def guest_script(self, name: str) -> str:
        return f"{self.guest}/{name}"


class Execution:
    """One running command: iterate for its output chunks (("stdout" | "stderr", bytes)); afterwards
    ``returncode`` holds its exit code."""

    def __init__(self, chunks: Iterator[tuple[str, bytes]], finish: Callable[[], int]):
        self._chunks = chunks
        self._finish = finish
        self._code: int | None = None

    def __iter__(self) -> Iterator[tuple[str, bytes]]:
        yield from self._chunks
        self._code = self._finish()

    @property
    def returncode(self) -> int:
        if self._code is None:
            for _ in self:
                pass
        assert self._code is not None
        return self._code


class Runtime:
    """The interface every inside-step goes through (see the module docstring)."""

    name = "runtime"
    python = "python3"
    places: Places

    def execute(self, argv: Sequence[str], env: Mapping[str, str] | None = None,
                cwd: str | None = None) -> Execution:
        raise NotImplementedError

    def run(self, argv: Sequence[str], env: Mapping[str, str] | None = None, cwd: str | None = None,
            out: Writer | None = None, err: Writer | None = None) -> int:
        """Run to completion, each chunk to ``out``/``err`` (default: this process's stdout/stderr)."""
        write = {"stdout": out or writer(sys.stdout), "stderr": err or writer(sys.stderr)}
        execution = self.execute(argv, env, cwd)
        for stream, chunk in execution:
            write[stream](chunk)
        return execution.returncode

    def to_host(self, path: str) -> Path:
        """The host file behind a path in this runtime (results, logs the runtime wrote)."""
        raise NotImplementedError

    def from_host(self, path: Path) -> str | None:
        """How the runtime names a host file (None: the runtime cannot see it)."""
        raise NotImplementedError

    def module_env(self) -> dict[str, str]:
        """What a step needs to run a workbench module (`python -m workbench...`) there."""
        return {}

    def describe(self) -> str:
        return self.name

    def close(self) -> None:
        """Release what the runtime holds (a Docker connection)."""


def writer(stream) -> Writer:
    """Bytes to a text stream (through its binary buffer when it has one), flushed."""
    buffer = getattr(stream, "buffer", None)

    def write(data: bytes) -> None:
        if buffer is not None:
            buffer.write(data)
            buffer.flush()
        else:
            stream.write(data.decode(errors="replace"))
            stream.flush()

    return write


def discard(data: bytes) -> None:
    """A writer that drops the output (quiet runs keep it in their own log files)."""


# --------------------------------------------------------------------------------------- host
def host_places(settings: Settings, python: str) -> Places:
    state = Path(python).expanduser().absolute().parent.parent / "share" / "vllm-workbench"
    return Places(
        fork=str(settings.fork_path), kernels=str(settings.root / "custom_kernels"),
        patches=str(settings.root / "patches"), results=str(settings.results_path),
        wheels=str(settings.wheels_path), guest=str(Path(__file__).resolve().parent / GUEST),
        state=str(state), hf_cache=str(settings.hf_cache_path),
        ccache=os.environ.get("CCACHE_DIR") or str(Path.home() / ".cache" / "ccache"),
    )


class HostRuntime(Runtime):
    """Steps run as child processes of this one, with ``workbench.python`` as the interpreter."""

    name = "host"

    def __init__(self, settings: Settings):
        self.python = host_python(settings)
        self.places = host_places(settings, self.python)
        self.root = settings.root

    def module_env(self) -> dict[str, str]:
        # The checkout goes last on the path: a folder there (vllm/, custom_kernels/) must never shadow
        # the installed package of the same name.
        current = os.environ.get("PYTHONPATH", "")
        return {"PYTHONPATH": f"{current}{os.pathsep if current else ''}{self.root}"}

    def environment(self, env: Mapping[str, str] | None) -> dict[str, str]:
        """Ours plus the step's; the interpreter's bin folder first on PATH, so the console scripts
        of its environment (vllm, pip, ninja) are the ones a step finds."""
        full = {**os.environ, **(env or {})}
        bin_dir = str(Path(self.python).expanduser().absolute().parent)
        full["PATH"] = bin_dir + os.pathsep + full.get("PATH", "")
        return full

    def execute(self, argv: Sequence[str], env: Mapping[str, str] | None = None,
                cwd: str | None = None) -> Execution:
        argv = [self.python if a == "python3" and i == 0 else a for i, a in enumerate(argv)]
        try:
            proc = subprocess.Popen(argv, env=self.environment(env), cwd=cwd, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
        except FileNotFoundError:
            raise WorkbenchError(f"{argv[0]} not found on this host: set workbench.python to an interpreter "
                                 "that exists (INVOKE_WORKBENCH_PYTHON=/path/to/venv/bin/python)") from None
        except NotADirectoryError:
            raise WorkbenchError(f"working folder {cwd} does not exist on this host") from None
        return Execution(_merged(proc), proc.wait)

    def to_host(self, path: str) -> Path:
        return Path(path)

    def from_host(self, path: Path) -> str | None:
        return str(Path(path).absolute())

    def describe(self) -> str:
        return f"this host ({self.python})"


def _merged(proc: subprocess.Popen) -> Iterator[tuple[str, bytes]]:
    """stdout and stderr chunks as they come (one reader thread per pipe, so neither blocks the other)."""
    chunks: queue.Queue[tuple[str, bytes | None]] = queue.Queue()

    def pump(name: str, pipe) -> None:
        for chunk in iter(lambda: pipe.read1(65536), b""):
            chunks.put((name, chunk))
        chunks.put((name, None))

    threads = [threading.Thread(target=pump, args=(n, p), daemon=True)
               for n, p in (("stdout", proc.stdout), ("stderr", proc.stderr))]
    for t in threads:
        t.start()
    open_pipes = 2
    while open_pipes:
        name, chunk = chunks.get()
        if chunk is None:
            open_pipes -= 1
        else:
            yield name, chunk


# --------------------------------------------------------------------------------------- resolve
def runtime_name(settings: Settings, flag: str | None = None) -> str:
    """--runtime > workbench.runtime (invoke.yaml, INVOKE_WORKBENCH_RUNTIME); one line when unknown."""
    name = (flag or settings.runtime or "docker").strip().lower()
    if name not in RUNTIMES:
        raise WorkbenchError(f"runtime {name!r} is not one of {', '.join(RUNTIMES)}: use --runtime docker (the dev "
                             "container) or --runtime host (this machine's workbench.python)")
    return name


def host_python(settings: Settings) -> str:
    """workbench.python as an interpreter path: a name is looked up on PATH, a relative path is the checkout's."""
    import shutil

    value = settings.python
    if not value:
        return sys.executable
    if "/" not in value:
        return shutil.which(value) or value
    return str(settings.path(value))


def container_only(settings: Settings, task: str, flag: str | None = None) -> None:
    """Tasks about the container itself refuse the host runtime in one line."""
    if runtime_name(settings, flag) == "host":
        raise WorkbenchError(f"invoke {task} manages the dev container, which the host runtime has none of: "
                             "use it with --runtime docker (or unset workbench.runtime)")


def posix(path: str | PurePosixPath, *parts: str) -> str:
    return str(PurePosixPath(path).joinpath(*parts))
