"""The dev container's lifecycle on a real Docker engine: up, down, commit.

``up`` creates the container exactly as docker-compose.yml declares it (``compose.load_spec``),
reuses a matching one, recreates one whose spec drifted (refusing when that would discard work in
its filesystem), and is safe to run concurrently. Every step finds the container by the name the
compose file gives it, on the one client its task connected.
"""

from __future__ import annotations

import hashlib
import re
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

from workbench.config import Settings
from workbench.container import compose, host_folders, images, labels, provenance
from workbench.container.daemon import find_container, host_description, require_managed
from workbench.container.places import container_places
from workbench.errors import WorkbenchError
from workbench.filelock import exclusive
from workbench.fork.source import fork_state

# Paths whose changes in a container's writable layer are not the user's work (scratch and caches
# that any shell creates); anything else makes a drifted container "hold work" and blocks recreation.
_SCRATCH_PREFIXES = ("/tmp", "/run", "/var/tmp", "/var/run", "/proc", "/dev", "/etc/hostname", "/etc/hosts",
                     "/etc/resolv.conf", "/root/.bash_history", "/home/dev/.bash_history", "/var/log")


class NoGpuRuntime(WorkbenchError):
    pass


def _gpu_error(message: str) -> NoGpuRuntime:
    return NoGpuRuntime(
        "Docker cannot give this container GPUs (" + message.strip().splitlines()[0][:160] + "): install the "
        "NVIDIA Container Toolkit and run `sudo nvidia-ctk runtime configure --runtime=docker` then restart "
        "Docker, or use `invoke up --gpus none` for a CPU-only container"
    )


# runc's "error setting rlimit type N": N is the Linux RLIMIT_* number.
_RLIMITS = {3: "stack", 6: "nproc", 7: "nofile", 8: "memlock"}


def _rlimit_error(text: str) -> WorkbenchError:
    match = re.search(r"error setting rlimit type (\d+)", text)
    name = _RLIMITS.get(int(match.group(1)), f"type {match.group(1)}") if match else "memlock"
    if name == "memlock":
        return WorkbenchError(
            "the daemon may not raise the memlock ulimit docker-compose.yml asks for (rootless Docker or a "
            "sandbox): set WORKBENCH_ULIMIT_MEMLOCK to at most $(( $(ulimit -Hl) * 1024 )) bytes, or use a "
            "rootful daemon"
        )
    return WorkbenchError(
        f"the daemon may not set the container's {name} ulimit (docker-compose.yml's value, or the daemon's "
        f"default where the file sets none, is above this host's limit): lower it in docker-compose.yml's ulimits "
        f"or the daemon's default (Docker: --default-ulimit {name}=...; Podman: default_ulimits in containers.conf)"
    )


def _is_gpu_runtime_error(text: str) -> bool:
    return "could not select device driver" in text or "Unknown runtime specified nvidia" in text


@contextmanager
def _up_lock(name: str) -> Iterator[None]:
    """Serialize concurrent `invoke up`s for one container on this host (the daemon's name conflict
    is the backstop across hosts)."""
    key = hashlib.sha256(f"{host_description()}|{name}".encode()).hexdigest()[:16]
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
    # The fork is checked separately: an absent fork is an error, not something to create.
    host_folders.make_folders(src for src in spec.bind_sources() if src != settings.fork_path)


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

    spec = replace(spec, image=choice.ref, labels={**spec.labels, labels.MANAGED: "true"})
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
    if (client.images.get(choice.ref).labels or {}).get(labels.COMMITTED_FROM) != container.id:
        return False
    own = replace(spec, image=(container.attrs.get("Config") or {}).get("Image", ""))
    return container.labels.get(labels.SPEC) == _fingerprint(own, container.image.id)


def installed_image(client, settings: Settings) -> str:
    """The image `invoke install` will install into: the dev container's, or the one `up` would pick."""
    container = find_container(client, compose.load_spec(settings).name)
    if container is not None:
        return container.image.id
    return plan_up(client, settings, settings.gpus)[1].ref


def up(client, settings: Settings, gpus: str | None = None, recreate: bool = False,
       dry_run: bool = False) -> UpResult:
    gpus = settings.gpus if gpus is None else gpus
    spec, choice, fingerprint = desired(client, settings, gpus)
    with _up_lock(spec.name):
        existing = find_container(client, spec.name)
        action = "created"
        if existing is not None:
            require_managed(existing, spec.name)
            same = existing.labels.get(labels.SPEC) == fingerprint
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
    deadline = time.monotonic() + seconds
    while (container := find_container(client, name)) is None:
        if time.monotonic() > deadline:
            raise WorkbenchError(f"another process holds the name {name} but no such container appeared: retry")
        time.sleep(0.1)
    return container


def _create(client, spec: compose.ContainerSpec, settings: Settings, fingerprint: str, reason: str):
    from docker.errors import APIError

    _prepare_host_dirs(spec, settings)
    engine = images.daemon_engine(client)
    kwargs = spec.create_kwargs(engine)
    kwargs["labels"] = {**kwargs["labels"], labels.SPEC: fingerprint, labels.IMAGE_REASON: reason[:200]}
    try:
        return client.containers.create(**kwargs)
    except APIError as err:
        text = str(err.explanation or err)
        if err.status_code == 409:
            return None
        if _is_gpu_runtime_error(text):
            raise _gpu_error(text) from None
        cdi = spec.cdi_devices()
        if "Podman" in engine and cdi and any(f"stat {d}" in text for d in cdi):
            raise NoGpuRuntime(
                f"Podman cannot give this container GPUs: its Docker-compatible API did not resolve the CDI device "
                f"{cdi[0]} ({text.splitlines()[0][:120]}): generate the CDI spec (`sudo nvidia-ctk cdi generate "
                "--output=/etc/cdi/nvidia.yaml`) on a Podman that resolves CDI names through that API, or use "
                "`invoke up --gpus none` for a CPU-only container"
            ) from None
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
            raise _rlimit_error(text) from None
        if "container-init binary not found" in text:
            raise WorkbenchError(
                "Podman has no init binary for docker-compose.yml's `init: true` (catatonit): install it "
                "(Debian/Ubuntu: `apt install catatonit`), then run invoke up again"
            ) from None
        raise WorkbenchError(f"container {container.name} did not start: {text.splitlines()[0]}") from None


@dataclass(frozen=True)
class DownResult:
    name: str  # the container docker-compose.yml names
    removed: bool
    volumes_removed: tuple[str, ...]
    kept: tuple[str, ...]


def down(client, settings: Settings, volumes: bool = False, dry_run: bool = False) -> DownResult:
    """Remove the dev container; its named volumes (ccache) only with ``volumes``. Bind mounts (the
    fork, results, HF cache) are host folders and are never touched."""
    from docker.errors import NotFound

    spec = compose.load_spec(settings)
    container = find_container(client, spec.name)
    volume_names: list[str] = []
    if container is not None:
        require_managed(container, spec.name)
        volume_names = [m["Name"] for m in container.attrs.get("Mounts", []) if m.get("Type") == "volume"]
        if not dry_run:
            container.remove(force=True)
    if not volume_names and volumes:
        volume_names = spec.volume_names()
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
    return DownResult(spec.name, container is not None, tuple(removed), tuple(kept))


@dataclass(frozen=True)
class CommitResult:
    ref: str
    image_id: str
    labels: dict[str, str]


def commit(client, settings: Settings, tag: str | None = None, dry_run: bool = False) -> CommitResult:
    """Commit the dev container as <image>:<tag>-compiled with provenance labels, the install record
    read where the container's places put it."""
    spec = compose.load_spec(settings)
    container = find_container(client, spec.name)
    if container is None:
        raise WorkbenchError(f"no container {spec.name} to commit: run `invoke up` and install first")
    require_managed(container, spec.name)
    record = None
    if container.status == "running":
        result = container.exec_run(["cat", container_places(settings, spec).install_record], demux=False)
        record = result.output.decode(errors="replace") if result.exit_code == 0 else None
    install = provenance.parse_install_record(record)
    state = fork_state(settings.fork_path)
    source_image = (container.image.tags or [container.image.id])[0]
    made = provenance.commit_labels(state, install, source_image, settings.image, settings.tag, container.id)
    tag = tag or f"{settings.tag}-compiled"
    ref = f"{settings.image}:{tag}"
    if dry_run:
        return CommitResult(ref, "", made)
    # Labels only: the container's config (env without secrets, CMD) carries over unchanged.
    changes = [f'LABEL {key}="{_label_value(value)}"' for key, value in made.items()]
    image = container.commit(repository=settings.image, tag=tag, changes=changes)
    return CommitResult(ref, image.id, made)


def _label_value(value: str) -> str:
    return value.replace("\\", "/").replace('"', "'").replace("\n", " ")
