"""The dev container's lifecycle on a real Docker engine, through the docker SDK.

``up`` creates the container exactly as docker-compose.yml declares it (``compose.load_spec``),
reuses a matching one, recreates one whose spec drifted (refusing when that would discard work in
its filesystem), and is safe to run concurrently. Secrets reach the container only at exec time.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath

from workbench.config import Settings
from workbench.container import compose, images, provenance
from workbench.errors import WorkbenchError
from workbench.filelock import exclusive
from workbench.fork.source import fork_state
from workbench.runtime import GUEST, Execution, Places, Runtime, posix

MANAGED_LABEL = "workbench.managed"
SPEC_LABEL = "workbench.spec"
IMAGE_REASON_LABEL = "workbench.image-reason"

# Paths whose changes in a container's writable layer are not the user's work (scratch and caches
# that any shell creates); anything else makes a drifted container "hold work" and blocks recreation.
_SCRATCH_PREFIXES = ("/tmp", "/run", "/var/tmp", "/var/run", "/proc", "/dev", "/etc/hostname", "/etc/hosts",
                     "/etc/resolv.conf", "/root/.bash_history", "/home/dev/.bash_history", "/var/log")


class NoGpuRuntime(WorkbenchError):
    pass


def _host_description() -> str:
    return os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"


def connect(timeout: int = 120):
    """A docker client for the configured daemon, or one line saying how to get one running."""
    import docker
    from docker.errors import DockerException

    try:
        client = docker.from_env(timeout=timeout)
        client.ping()
        return client
    except DockerException as err:
        text = str(err)
        if "Permission denied" in text or "PermissionError" in text:
            raise WorkbenchError(
                f"permission denied on the Docker socket at {_host_description()}",
                fix="add your user to the docker group (sudo usermod -aG docker $USER, then log in again)",
            ) from None
        raise WorkbenchError(
            f"no Docker daemon at {_host_description()}",
            fix="start Docker (e.g. sudo systemctl start docker) or set DOCKER_HOST to a running daemon",
        ) from None


def find_container(client, name: str):
    from docker.errors import NotFound

    try:
        return client.containers.get(name)
    except NotFound:
        return None


def require_managed(container, name: str) -> None:
    labels = container.labels or {}
    if labels.get(MANAGED_LABEL) != "true":
        raise WorkbenchError(
            f"a container named {name} exists that the workbench did not create: remove it (docker rm -f {name}) "
            "or choose another name (workbench.container in invoke.yaml)"
        )


def nvidia_runtime_present(info: dict) -> bool:
    return "nvidia" in (info.get("Runtimes") or {})


def _gpu_error(message: str) -> NoGpuRuntime:
    return NoGpuRuntime(
        "Docker cannot give this container GPUs (" + message.strip().splitlines()[0][:160] + "): install the "
        "NVIDIA Container Toolkit and run `sudo nvidia-ctk runtime configure --runtime=docker` then restart "
        "Docker, or use `invoke up --gpus none` for a CPU-only container"
    )


def _is_gpu_runtime_error(text: str) -> bool:
    return "could not select device driver" in text or "Unknown runtime specified nvidia" in text


@contextmanager
def _up_lock(name: str) -> Iterator[None]:
    """Serialize concurrent `invoke up`s for one container on this host (the daemon's name conflict
    is the backstop across hosts)."""
    key = hashlib.sha256(f"{_host_description()}|{name}".encode()).hexdigest()[:16]
    with exclusive(Path(tempfile.gettempdir()) / f"vllm-workbench-up-{key}.lock"):
        yield


@dataclass(frozen=True)
class UpResult:
    container_id: str
    name: str
    action: str  # "created" | "started" | "reused" | "recreated" | "would create" ...
    image: str
    image_reason: str
    service: str


def user_changes(container) -> list[str]:
    """Paths changed in the container's writable layer that look like the user's work: not scratch,
    not the mount points Docker creates, not the init binary (/usr/sbin/docker-init) nor their parents."""
    made_by_docker = {m["Destination"] for m in container.attrs.get("Mounts", [])} | {"/usr/sbin/docker-init"}

    def is_users(path: str) -> bool:
        if path.startswith(_SCRATCH_PREFIXES) or path in made_by_docker:
            return False
        return not any(made.startswith(path.rstrip("/") + "/") for made in made_by_docker)

    return sorted(c["Path"] for c in container.diff() or [] if is_users(c["Path"]))


def _prepare_host_dirs(spec: compose.ContainerSpec, settings: Settings) -> None:
    """Create missing bind-mount sources as the host user (Docker would create them root-owned)."""
    for src in spec.bind_sources():
        if not src.exists():
            if src == settings.fork_path:
                continue  # checked separately: an absent fork is an error, not something to create
            src.mkdir(parents=True, exist_ok=True)


def _image_exists(client, ref: str) -> bool:
    from docker.errors import ImageNotFound

    try:
        client.images.get(ref)
        return True
    except ImageNotFound:
        return False


def plan_up(client, settings: Settings, gpus: str) -> tuple[compose.ContainerSpec, provenance.ImageChoice]:
    """The spec `up` would create, with the image chosen (committed one if it matches the fork)."""
    spec = compose.load_spec(settings, gpus)
    state = fork_state(settings.fork_path).require(git_checkout=False)
    committed = [c for c in images.committed_images(client, settings) if _image_exists(client, c["ref"])]
    choice = provenance.choose_image(spec.image, committed, state)
    if not _image_exists(client, choice.ref):
        raise WorkbenchError(f"image {choice.ref} not found",
                             fix=f"run `invoke build` first (workbench.tag is {settings.tag!r}: check "
                                 "INVOKE_WORKBENCH_TAG / invoke.yaml if that is not the tag you built)")

    labels = {**spec.labels, MANAGED_LABEL: "true"}
    spec = replace(spec, image=choice.ref, labels=labels)
    return spec, choice


def _fingerprint(spec: compose.ContainerSpec, image_id: str) -> str:
    return hashlib.sha256(f"{spec.fingerprint()}|{image_id}".encode()).hexdigest()[:16]


def desired(client, settings: Settings, gpus: str) -> tuple[compose.ContainerSpec, provenance.ImageChoice, str]:
    """What `up` would create now, and its fingerprint (spec + image id) that the container carries."""
    spec, choice = plan_up(client, settings, gpus)
    image_id = client.images.get(spec.image).id
    return spec, choice, _fingerprint(spec, image_id)


def committed_from_itself(client, container, spec: compose.ContainerSpec, choice: provenance.ImageChoice) -> bool:
    """True when the image `up` picks was committed from this very container and the container is
    otherwise what the compose file declares: its work is in that image already, so it is kept rather
    than recreated (`invoke commit` then `invoke up` needs no second commit)."""
    if not choice.committed:
        return False
    labels = client.images.get(choice.ref).labels or {}
    if labels.get(provenance.CONTAINER_LABEL) != container.id:
        return False
    own = replace(spec, image=(container.attrs.get("Config") or {}).get("Image", ""))
    return container.labels.get(SPEC_LABEL) == _fingerprint(own, container.image.id)


def up(settings: Settings, gpus: str | None = None, recreate: bool = False, dry_run: bool = False,
       client=None) -> UpResult:
    gpus = settings.gpus if gpus is None else gpus
    client = client or connect()
    spec, choice, fingerprint = desired(client, settings, gpus)
    with _up_lock(spec.name):
        existing = find_container(client, spec.name)
        action = "created"
        if existing is not None:
            require_managed(existing, spec.name)
            same = existing.labels.get(SPEC_LABEL) == fingerprint
            if same or committed_from_itself(client, existing, spec, choice):
                image, reason = spec.image, choice.reason
                if not same:
                    image = (existing.image.tags or [existing.image.short_id])[0]
                    reason = f"{choice.ref} was committed from this container, which already holds its work"
                if dry_run:
                    return UpResult(existing.id, spec.name, "would reuse", image, reason, spec.service)
                if existing.status != "running":
                    _start(existing, remove_on_gpu_error=False)
                    return UpResult(existing.id, spec.name, "started", image, reason, spec.service)
                return UpResult(existing.id, spec.name, "reused", image, reason, spec.service)
            changed = user_changes(existing)
            if changed and not recreate:
                raise WorkbenchError(
                    f"container {spec.name} no longer matches docker-compose.yml/config, but its filesystem holds "
                    f"{len(changed)} changed path(s) (e.g. {changed[0]}): run `invoke commit` to keep them, then "
                    "`invoke up --recreate`"
                )
            if dry_run:
                return UpResult(existing.id, spec.name, "would recreate", spec.image, choice.reason, spec.service)
            existing.remove(force=True)
            action = "recreated"
        elif dry_run:
            return UpResult("", spec.name, "would create", spec.image, choice.reason, spec.service)
        container = _create(client, spec, settings, fingerprint, choice.reason)
        if container is None:  # another process created it between our check and create
            container = _wait_for(client, spec.name)
            return UpResult(container.id, spec.name, "reused", spec.image, choice.reason, spec.service)
        _start(container, remove_on_gpu_error=True)
        return UpResult(container.id, spec.name, action, spec.image, choice.reason, spec.service)


def _wait_for(client, name: str, seconds: float = 10.0):
    """The container another `up` is creating: the daemon reserves the name (409) a moment before
    the container can be looked up."""
    import time

    deadline = time.monotonic() + seconds
    while (container := find_container(client, name)) is None:
        if time.monotonic() > deadline:
            raise WorkbenchError(f"another process holds the name {name} but no such container appeared: retry")
        time.sleep(0.1)
    return container


def _create(client, spec: compose.ContainerSpec, settings: Settings, fingerprint: str, reason: str):
    from docker.errors import APIError

    _prepare_host_dirs(spec, settings)
    kwargs = spec.create_kwargs()
    kwargs["labels"] = {**kwargs["labels"], SPEC_LABEL: fingerprint, IMAGE_REASON_LABEL: reason[:200]}
    try:
        return client.containers.create(**kwargs)
    except APIError as err:
        text = str(err.explanation or err)
        if err.status_code == 409:
            return None
        if _is_gpu_runtime_error(text):
            raise _gpu_error(text) from None
        raise WorkbenchError(f"could not create container {spec.name}: {text.splitlines()[0]}") from None


def _start(container, remove_on_gpu_error: bool) -> None:
    from docker.errors import APIError

    try:
        container.start()
    except APIError as err:
        text = str(err.explanation or err)
        if remove_on_gpu_error:
            container.remove(force=True)  # never leave a Created container behind
        if _is_gpu_runtime_error(text):
            raise _gpu_error(text) from None
        if "error setting rlimit" in text:
            raise WorkbenchError(
                "the Docker daemon may not raise the ulimits docker-compose.yml asks for (rootless Docker or a "
                "sandbox): set WORKBENCH_ULIMIT_MEMLOCK to at most $(( $(ulimit -Hl) * 1024 )) bytes, or use a "
                "rootful daemon"
            ) from None
        raise WorkbenchError(f"container {container.name} did not start: {text.splitlines()[0]}") from None


def secret_environment(settings: Settings, environ: dict[str, str] | None = None) -> dict[str, str]:
    """The secrets set on the host, to pass to one exec (never to the container's create config)."""
    environ = os.environ if environ is None else environ
    return {name: environ[name] for name in settings.secrets if environ.get(name)}


def running_container(settings: Settings, client=None, start: bool = True, name: str | None = None):
    """The dev container, started (via `up`) when it is not running. ``name``: the one the compose
    file gives it (default: the settings' name, which the compose file interpolates)."""
    client = client or connect()
    name = name or settings.container
    container = find_container(client, name)
    if container is not None:
        require_managed(container, name)
        container.reload()
        if container.status == "running":
            return container
    if not start:
        raise WorkbenchError(f"container {name} is not running: run `invoke up`")
    up(settings, client=client)
    return client.containers.get(name)


# Where the dev image keeps the install record (Dockerfile.dev creates /opt/workbench for the user).
IMAGE_STATE = "/opt/workbench"


def container_places(settings: Settings, spec: compose.ContainerSpec) -> Places:
    """The project's folders inside the container, read from the compose file's mounts (no second list)."""
    binds = {Path(m.source).resolve(): m.target for m in spec.mounts if m.type == "bind"}
    volumes = {m.source: m.target for m in spec.mounts if m.type == "volume"}

    def target(host: Path, what: str) -> str:
        found = binds.get(host.resolve())
        if found is None:
            raise WorkbenchError(f"{settings.compose_path.name} mounts no {what} ({host}) into service "
                                 f"{spec.service!r}: restore its volumes entry")
        return found

    return Places(
        fork=target(settings.fork_path, "vLLM fork"),
        kernels=target(settings.root / "custom_kernels", "custom_kernels folder"),
        patches=target(settings.root / "patches", "patches folder"),
        results=target(settings.results_path, "results folder"),
        wheels=target(settings.wheels_path, "wheels folder"),
        guest=posix(target(settings.root / "workbench", "workbench library"), GUEST),
        state=IMAGE_STATE,
        hf_cache=target(settings.hf_cache_path, "Hugging Face cache"),
        ccache=volumes.get(settings.ccache_volume, "/cache/ccache"),
    )


@dataclass(frozen=True)
class MountMap:
    """Host folder <-> container path for the compose file's bind mounts (longest container path first)."""

    binds: tuple[tuple[str, Path], ...]

    @classmethod
    def of(cls, spec: compose.ContainerSpec) -> MountMap:
        binds = ((m.target, Path(m.source)) for m in spec.mounts if m.type == "bind")
        return cls(tuple(sorted(binds, key=lambda item: len(item[0]), reverse=True)))

    def to_host(self, path: str) -> Path:
        for target, source in self.binds:
            if path == target or path.startswith(target.rstrip("/") + "/"):
                return source / PurePosixPath(path).relative_to(target)
        raise WorkbenchError(f"{path} is not in a folder the dev container mounts: it cannot be read from the host")

    def from_host(self, path: Path) -> str | None:
        host = Path(path).resolve()
        for target, source in self.binds:
            try:
                rel = host.relative_to(source.resolve())
            except ValueError:
                continue
            return posix(target, *rel.parts)
        return None


class DevContainer(Runtime):
    """The dev container as a runtime: name, spec and connection resolved once, each step one exec."""

    name = "docker"
    python = "python"  # the image's venv python (/opt/workbench-venv/bin is first on PATH)

    def __init__(self, settings: Settings, client, container, spec: compose.ContainerSpec):
        self.settings = settings
        self.client = client
        self.container = container
        self.spec = spec
        self.places = container_places(settings, spec)
        self.mounts = MountMap.of(spec)

    @classmethod
    def open(cls, settings: Settings, gpus: str | None = None, client=None, start: bool = True) -> DevContainer:
        """Connect, read the compose file, and find (or start, via `up`) the container it names."""
        client = client or connect()
        spec = compose.load_spec(settings, gpus)
        return cls(settings, client, running_container(settings, client, start=start, name=spec.name), spec)

    def execute(self, argv: Sequence[str], env: Mapping[str, str] | None = None,
                cwd: str | None = None) -> Execution:
        api = self.client.api
        environment = {**secret_environment(self.settings), **(env or {})}
        exec_id = api.exec_create(self.container.id, list(argv), environment=environment or None, workdir=cwd,
                                  stdout=True, stderr=True)["Id"]

        def chunks() -> Iterator[tuple[str, bytes]]:
            for stdout, stderr in api.exec_start(exec_id, stream=True, demux=True):
                if stdout:
                    yield "stdout", stdout
                if stderr:
                    yield "stderr", stderr

        return Execution(chunks(), lambda: int(api.exec_inspect(exec_id)["ExitCode"]))

    def to_host(self, path: str) -> Path:
        return self.mounts.to_host(path)

    def from_host(self, path: Path) -> str | None:
        return self.mounts.from_host(path)

    def describe(self) -> str:
        return f"dev container {self.container.name}"

    def close(self) -> None:
        self.client.close()


def exec_in_container(settings: Settings, cmd: list[str], env: dict[str, str] | None = None,
                      workdir: str | None = None, client=None,
                      out: Callable[[bytes], object] | None = None,
                      err: Callable[[bytes], object] | None = None) -> int:
    """Run ``cmd`` in the dev container (starting it if needed), streaming its output; the exit code."""
    return DevContainer.open(settings, client=client).run(cmd, env, workdir, out=out, err=err)


def interactive_command(settings: Settings, container_name: str, cmd: str | None) -> list[str]:
    """The `docker exec -it` command line for an interactive shell; secrets by name only (`-e NAME`
    takes the value from our environment, so it never appears in a process list)."""
    docker_cli = shutil.which("docker")
    if docker_cli is None:
        raise WorkbenchError("the docker CLI is not installed: an interactive shell needs it (apt install docker.io)")
    args = [docker_cli, "exec", "-i"]
    if sys.stdin.isatty() and sys.stdout.isatty():
        args.append("-t")
    for name in secret_environment(settings):
        args += ["-e", name]
    args.append(container_name)
    args += ["bash", "-lc", cmd] if cmd else ["bash", "-l"]
    return args


def shell(settings: Settings, cmd: str | None = None, interactive: bool | None = None) -> int:
    """An interactive shell (docker CLI, needs a TTY) or one command (SDK); returns its exit code."""
    dev = DevContainer.open(settings)
    if interactive is None:
        interactive = cmd is None
    if interactive:
        return subprocess.call(interactive_command(settings, dev.container.name, cmd))
    return dev.run(["bash", "-lc", cmd or "true"])


@dataclass(frozen=True)
class DownResult:
    container: str | None
    volumes_removed: tuple[str, ...]
    kept: tuple[str, ...]


def down(settings: Settings, volumes: bool = False, dry_run: bool = False, client=None) -> DownResult:
    """Remove the dev container; its named volumes (ccache) only with ``volumes``. Bind mounts (the
    fork, results, HF cache) are host folders and are never touched."""
    from docker.errors import NotFound

    client = client or connect()
    container = find_container(client, settings.container)
    removed_container = None
    volume_names: list[str] = []
    if container is not None:
        require_managed(container, settings.container)
        volume_names = [m["Name"] for m in container.attrs.get("Mounts", []) if m.get("Type") == "volume"]
        if not dry_run:
            container.remove(force=True)
        removed_container = container.name
    if not volume_names:
        volume_names = compose.load_spec(settings, "none").volume_names() if volumes else []
    removed, kept = [], []
    for name in volume_names:
        if volumes:
            if not dry_run:
                try:
                    client.volumes.get(name).remove()
                except NotFound:
                    continue
            removed.append(name)
        else:
            kept.append(name)
    return DownResult(removed_container, tuple(removed), tuple(kept))


@dataclass(frozen=True)
class CommitResult:
    ref: str
    image_id: str
    labels: dict[str, str]


def commit(settings: Settings, tag: str | None = None, dry_run: bool = False, client=None) -> CommitResult:
    """Commit the dev container as <image>:<tag>-compiled with provenance labels."""
    client = client or connect()
    container = find_container(client, settings.container)
    if container is None:
        raise WorkbenchError(f"no container {settings.container} to commit: run `invoke up` and install first")
    require_managed(container, settings.container)
    container.reload()
    record = None
    if container.status == "running":
        result = container.exec_run(["cat", provenance.INSTALL_RECORD], demux=False)
        record = result.output.decode(errors="replace") if result.exit_code == 0 else None
    install = provenance.parse_install_record(record)
    state = fork_state(settings.fork_path)
    source_image = (container.image.tags or [container.image.id])[0]
    labels = provenance.commit_labels(state, install, source_image, settings.image, settings.tag, container.id)
    tag = tag or f"{settings.tag}-compiled"
    ref = f"{settings.image}:{tag}"
    if dry_run:
        return CommitResult(ref, "", labels)
    # Labels only: the container's config (env without secrets, CMD) carries over unchanged.
    changes = [f'LABEL {key}="{_label_value(value)}"' for key, value in labels.items()]
    image = container.commit(repository=settings.image, tag=tag, changes=changes)
    return CommitResult(ref, image.id, labels)


def _label_value(value: str) -> str:
    return value.replace("\\", "/").replace('"', "'").replace("\n", " ")
