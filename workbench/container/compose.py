"""Read docker-compose.yml, the one declaration of the dev container, into a ``ContainerSpec``.

Where Compose is installed, compose_cli.py has Compose resolve the file and this module reads its answer;
without Compose this module is the resolver, as below.

`invoke up` creates the container from this spec through the docker SDK, so the compose file is
the only list of mounts, environment, GPUs and limits. Interpolation follows the Compose spec
(``${VAR}``, ``${VAR:-default}``, ``${VAR-default}``, ``${VAR:?error}``, ``$$``), with the variables Compose
itself would use: the project's ``.env`` (read with python-dotenv, as Compose does), overridden by the shell's
environment, overridden by what invoke's config sets. A service key this reader does not implement is an
error, never silently dropped; so is an override file, which plain Compose would merge in.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from workbench.config import Settings
from workbench.container import compose_cli
from workbench.errors import WorkbenchError
from workbench.gpu_selection import parse_gpu_selection

# Service keys that shape the container, and those that only matter to Compose itself.
_CONTAINER_KEYS = {
    "image", "container_name", "init", "ipc", "ulimits", "working_dir", "volumes", "environment",
    "labels", "command", "entrypoint", "shm_size", "user", "cap_add", "security_opt", "network_mode",
    "tty", "stdin_open", "deploy", "hostname", "extra_hosts",
}
_COMPOSE_ONLY_KEYS = {"build", "profiles"}



@dataclass(frozen=True)
class MountSpec:
    type: str  # "bind" | "volume"
    source: str  # absolute host path, or the volume's real name
    target: str
    read_only: bool = False


# A compose device driver's CDI vendor/class (the NVIDIA Container Toolkit's `nvidia-ctk cdi generate` names).
CDI_VENDOR = {"nvidia": "nvidia.com/gpu"}


@dataclass(frozen=True)
class GpuRequest:
    driver: str = "nvidia"
    count: int | None = None  # -1: all
    device_ids: tuple[str, ...] = ()
    capabilities: tuple[str, ...] = ("gpu",)


@dataclass(frozen=True)
class ContainerSpec:
    """Everything `invoke up` needs to create the dev container, as the compose file says."""

    service: str
    image: str
    name: str
    command: tuple[str, ...] | None = None
    entrypoint: tuple[str, ...] | None = None
    working_dir: str | None = None
    environment: dict[str, str] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    init: bool = False
    ipc_mode: str | None = None
    ulimits: tuple[tuple[str, int, int], ...] = ()
    mounts: tuple[MountSpec, ...] = ()
    gpus: tuple[GpuRequest, ...] = ()
    shm_size: str | None = None
    user: str | None = None
    cap_add: tuple[str, ...] = ()
    security_opt: tuple[str, ...] = ()
    network_mode: str | None = None
    hostname: str | None = None
    extra_hosts: tuple[str, ...] = ()
    tty: bool = False
    stdin_open: bool = False

    def fingerprint(self) -> str:
        """A stable hash of the spec: a container whose label differs has drifted from the file."""
        blob = json.dumps(asdict(self), sort_keys=True, default=list)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def bind_sources(self) -> list[Path]:
        return [Path(m.source) for m in self.mounts if m.type == "bind"]

    def volume_names(self) -> list[str]:
        return [m.source for m in self.mounts if m.type == "volume"]

    def cdi_devices(self) -> list[str]:
        """The GPUs as CDI device names (``nvidia.com/gpu=all``, ``nvidia.com/gpu=0``): what Podman takes, whose
        Docker-compatible API accepts a DeviceRequest and silently ignores it."""
        return [f"{CDI_VENDOR.get(g.driver, g.driver)}={i}" for g in self.gpus for i in (g.device_ids or ("all",))]

    def create_kwargs(self, engine: str = "Engine") -> dict[str, Any]:
        """Keyword arguments for ``docker.DockerClient.containers.create`` on a daemon whose engine component is
        ``engine`` (images.daemon_engine): Docker's takes GPUs as device requests, Podman's as CDI devices."""
        from docker.types import DeviceRequest, Mount, Ulimit

        podman = "Podman" in engine

        kwargs: dict[str, Any] = {
            "image": self.image,
            "name": self.name,
            "command": list(self.command) if self.command is not None else None,
            "entrypoint": list(self.entrypoint) if self.entrypoint is not None else None,
            "working_dir": self.working_dir,
            "environment": dict(self.environment),
            "labels": dict(self.labels),
            "init": self.init,
            "ipc_mode": self.ipc_mode,
            "ulimits": [Ulimit(name=n, soft=s, hard=h) for n, s, h in self.ulimits] or None,
            "mounts": [Mount(m.target, m.source, type=m.type, read_only=m.read_only) for m in self.mounts],
            "device_requests": None if podman else [
                DeviceRequest(driver=g.driver, count=g.count, device_ids=list(g.device_ids) or None,
                              capabilities=[list(g.capabilities)])
                for g in self.gpus
            ] or None,
            "devices": (self.cdi_devices() or None) if podman else None,
            "shm_size": self.shm_size,
            "user": self.user,
            "cap_add": list(self.cap_add) or None,
            "security_opt": list(self.security_opt) or None,
            "network_mode": self.network_mode,
            "hostname": self.hostname,
            "extra_hosts": _extra_hosts(self.extra_hosts) or None,
            "tty": self.tty,
            "stdin_open": self.stdin_open,
            "detach": True,
        }
        return {k: v for k, v in kwargs.items() if v is not None}


def interpolate(text: str, env: dict[str, str], where: str = "docker-compose.yml") -> str:
    """Compose-spec variable interpolation of one string."""

    def substitute(match: re.Match) -> str:
        if match.group("escaped"):
            return "$"
        name = match.group("braced") or match.group("named")
        op, arg = match.group("op"), match.group("arg") or ""
        value = env.get(name)
        if op in (":-", "-"):
            unset = value is None or (op == ":-" and value == "")
            return interpolate(arg, env, where) if unset else value
        if op in (":?", "?"):
            if value is None or (op == ":?" and value == ""):
                raise WorkbenchError(f"{where}: variable {name} must be set: {arg or 'it is required'}")
            return value
        if op in (":+", "+"):
            present = value is not None and (op == "+" or value != "")
            return interpolate(arg, env, where) if present else ""
        return value or ""

    return compose_cli.VARIABLE.sub(substitute, text)


def _interpolate_tree(node: Any, env: dict[str, str], where: str) -> Any:
    if isinstance(node, str):
        return interpolate(node, env, where)
    if isinstance(node, list):
        return [_interpolate_tree(n, env, where) for n in node]
    if isinstance(node, dict):
        return {k: _interpolate_tree(v, env, where) for k, v in node.items()}
    return node


def _base_image(settings: Settings) -> str:
    """The base image a compose build uses: as `invoke build` resolves it; empty (the file's default)
    when the fork's release is unknown."""
    from workbench.container.versions import resolve_base_image

    try:
        return resolve_base_image(settings.base_image, settings.fork_path)[0]
    except WorkbenchError:
        return ""


def compose_variables(settings: Settings) -> dict[str, str]:
    """The variables invoke's config feeds into the compose file (docker-compose.yml's header lists them)."""
    return {
        "WORKBENCH_IMAGE": settings.image_ref,
        "WORKBENCH_CONTAINER": settings.container,
        "WORKBENCH_FORK": str(settings.fork_path),
        "WORKBENCH_RESULTS": str(settings.results_path),
        "WORKBENCH_WHEELS": str(settings.wheels_path),
        "HF_HOME": str(settings.hf_cache_path),
        "WORKBENCH_CCACHE_VOLUME": settings.ccache_volume,
        "WORKBENCH_BASE_IMAGE": _base_image(settings),
        "WORKBENCH_UID": str(settings.host_uid),
        "WORKBENCH_GID": str(settings.host_gid),
    }


def load_compose(path: Path, env: dict[str, str]) -> dict[str, Any]:
    """The compose file as a dict, YAML anchors merged and variables interpolated."""
    if not path.is_file():
        raise WorkbenchError(
            f"{path} not found: run invoke from the workbench checkout (or set workbench.compose_file)"
        )
    # Imported here: host_folders runs this module's interpolation on a host python3 without PyYAML.
    import yaml

    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise WorkbenchError(f"{path.name} is not valid YAML ({str(err).splitlines()[0]}): fix the file") from err
    if not isinstance(raw.get("services"), dict):
        raise WorkbenchError(f"{path.name} declares no services: it must declare the dev container's service")
    return _interpolate_tree(raw, env, path.name)


# What `docker compose up` merges into the file on its own when it sits beside it (the Compose spec's defaults).
OVERRIDE_FILES = ("docker-compose.override.yml", "docker-compose.override.yaml", "compose.override.yml",
                  "compose.override.yaml")


def project_env(path: Path) -> dict[str, str]:
    """The project's ``.env`` beside the compose file as Compose reads it (python-dotenv, interpolating
    earlier entries and the shell's environment, UTF-8 with or without BOM); empty without one."""
    env_file = path.parent / ".env"
    if not env_file.is_file():
        return {}
    from dotenv import dotenv_values

    return {k: v for k, v in dotenv_values(env_file, encoding="utf-8-sig", interpolate=True).items()
            if v is not None}


def _refuse_override(path: Path) -> None:
    for name in OVERRIDE_FILES:
        if (path.parent / name).is_file():
            raise WorkbenchError(f"{name} beside {path.name}: `docker compose up` would merge it in, invoke up reads "
                                 f"{path.name} alone; move its settings into {path.name} (one declaration) or "
                                 "remove it")


def service_for(settings: Settings, gpus: str) -> str:
    """`--gpus none` selects the file's CPU variant (<service>-cpu); anything else the GPU service."""
    return f"{settings.service}-cpu" if parse_gpu_selection(gpus) == "none" else settings.service


def load_spec(settings: Settings, gpus: str | None = None, env: dict[str, str] | None = None) -> ContainerSpec:
    """The dev container's spec for a --gpus selection ("all", "none", "0,1")."""
    gpus = settings.gpus if gpus is None else gpus
    selection = parse_gpu_selection(gpus)
    path = settings.compose_path
    if not path.is_file():
        raise WorkbenchError(
            f"{path} not found: run invoke from the workbench checkout (or set workbench.compose_file)"
        )
    command = compose_cli.choose(settings.compose_resolver)
    if command is not None:
        # Compose reads .env itself, and the shell's environment wins over it there too.
        doc = compose_cli.resolve(command, path, {**os.environ, **(env or {}), **compose_variables(settings)})
        if not isinstance(doc.get("services"), dict):
            raise WorkbenchError(f"{path.name} declares no services: it must declare the dev container's service")
    else:
        _refuse_override(path)
        variables = {**project_env(path), **os.environ, **(env or {}), **compose_variables(settings)}
        doc = load_compose(path, variables)
    name = service_for(settings, gpus)
    services = doc["services"]
    if name not in services:
        hint = " (the CPU variant for --gpus none)" if name.endswith("-cpu") else ""
        raise WorkbenchError(f"{path.name} has no service {name!r}{hint}: declare it, or set workbench.service")
    spec = _service_spec(name, services[name], doc, path, settings)
    if selection not in ("all", "none"):
        if not spec.gpus:
            raise WorkbenchError(f"service {name!r} reserves no GPUs, so --gpus {gpus} has nothing to select: "
                                 "reserve GPUs in docker-compose.yml, or use --gpus none")
        ids = tuple(str(i) for i in selection)
        spec = replace(spec, gpus=tuple(replace(g, count=None, device_ids=ids) for g in spec.gpus))
    return spec


def _service_spec(name: str, svc: dict, doc: dict, path: Path, settings: Settings) -> ContainerSpec:
    unknown = sorted(k for k in svc if k not in _CONTAINER_KEYS | _COMPOSE_ONLY_KEYS and not k.startswith("x-"))
    if unknown:
        raise WorkbenchError(
            f"{path.name}: service {name!r} uses {', '.join(unknown)}, which invoke up does not implement: "
            "remove it or add support in workbench/container/compose.py"
        )
    if "image" not in svc:
        raise WorkbenchError(f"{path.name}: service {name!r} has no image: set image (invoke build tags it)")
    environment = _mapping(svc.get("environment"), f"service {name!r} environment")
    leaked = sorted(set(environment) & set(settings.secrets))
    if leaked:
        raise WorkbenchError(
            f"{path.name} puts {', '.join(leaked)} into the container's create config, where docker commit "
            "would bake it into an image: remove it; secrets reach the container at exec time"
        )
    return ContainerSpec(
        service=name,
        image=str(svc["image"]),
        name=str(svc.get("container_name") or settings.container),
        command=_command(svc.get("command")),
        entrypoint=_command(svc.get("entrypoint")),
        working_dir=svc.get("working_dir"),
        environment=environment,
        labels=_mapping(svc.get("labels"), f"service {name!r} labels"),
        init=bool(svc.get("init", False)),
        ipc_mode=svc.get("ipc"),
        ulimits=_ulimits(svc.get("ulimits") or {}),
        mounts=tuple(_mount(v, doc, path) for v in svc.get("volumes") or []),
        gpus=_gpu_requests(svc.get("deploy") or {}, name, path),
        shm_size=None if svc.get("shm_size") is None else str(svc["shm_size"]),
        user=None if svc.get("user") is None else str(svc["user"]),
        cap_add=tuple(svc.get("cap_add") or ()),
        security_opt=tuple(svc.get("security_opt") or ()),
        network_mode=svc.get("network_mode"),
        hostname=svc.get("hostname"),
        extra_hosts=tuple(svc.get("extra_hosts") or ()),
        tty=bool(svc.get("tty", False)),
        stdin_open=bool(svc.get("stdin_open", False)),
    )


def _mapping(value: Any, what: str) -> dict[str, str]:
    if value is None:
        return {}
    if isinstance(value, dict):
        return {str(k): "" if v is None else str(v) for k, v in value.items()}
    if isinstance(value, list):
        out = {}
        for item in value:
            key, sep, val = str(item).partition("=")
            out[key] = val if sep else os.environ.get(key, "")
        return out
    raise WorkbenchError(f"docker-compose.yml: {what} must be a mapping or a list of KEY=VALUE")


def _command(value: Any) -> tuple[str, ...] | None:
    if value is None:
        return None
    if isinstance(value, str):
        import shlex

        return tuple(shlex.split(value))
    return tuple(str(v) for v in value)


def _ulimits(value: dict) -> tuple[tuple[str, int, int], ...]:
    out = []
    for limit, setting in sorted(value.items()):
        if isinstance(setting, dict):
            out.append((limit, int(setting["soft"]), int(setting["hard"])))
        else:
            out.append((limit, int(setting), int(setting)))
    return tuple(out)


def host_path(source: str, base: Path) -> str:
    """A bind source as Compose resolves it: ~ expanded, relative to the project directory ``base``."""
    expanded = os.path.expanduser(source)
    return str((base / expanded).resolve() if not os.path.isabs(expanded) else Path(expanded))


def split_short(entry: str, where: str = "docker-compose.yml") -> tuple[str, str, bool, str]:
    """A short-syntax volume ``SOURCE:TARGET[:MODE]`` as (source, target, read_only, "bind" | "volume")."""
    parts = entry.split(":")
    if len(parts) == 1:
        raise WorkbenchError(f"{where}: anonymous volume {entry!r} is not supported: give it a source")
    source, target = parts[0], parts[1]
    read_only = len(parts) > 2 and "ro" in parts[2].split(",")
    return source, target, read_only, "bind" if source.startswith((".", "/", "~")) else "volume"


def _volume_name(key: str, doc: dict, path: Path) -> str:
    declared = (doc.get("volumes") or {})
    if key not in declared:
        raise WorkbenchError(f"{path.name}: volume {key!r} is used but not declared under top-level volumes")
    conf = declared[key] or {}
    if conf.get("name"):
        return str(conf["name"])
    project = re.sub(r"[^-_a-z0-9]", "", path.parent.name.lower())
    return f"{project}_{key}"


def _mount(entry: Any, doc: dict, path: Path) -> MountSpec:
    base = path.parent
    if isinstance(entry, dict):
        kind, source, target = entry.get("type", "volume"), entry.get("source", ""), entry["target"]
        read_only = bool(entry.get("read_only", False))
    else:
        source, target, read_only, kind = split_short(str(entry), path.name)
    if kind == "bind":
        return MountSpec("bind", host_path(source, base), target, read_only)
    if kind == "volume":
        return MountSpec("volume", _volume_name(source, doc, path), target, read_only)
    raise WorkbenchError(f"{path.name}: mount type {kind!r} is not supported by invoke up: use bind or volume")


def _gpu_requests(deploy: dict, name: str, path: Path) -> tuple[GpuRequest, ...]:
    devices = (((deploy.get("resources") or {}).get("reservations") or {}).get("devices")) or []
    out = []
    for dev in devices:
        caps = tuple(dev.get("capabilities") or ())
        if "gpu" not in caps:
            raise WorkbenchError(f"{path.name}: service {name!r} reserves a device without the gpu capability")
        count = dev.get("count")
        if count == "all":
            count = -1
        out.append(GpuRequest(
            driver=dev.get("driver", "nvidia"),
            count=None if count is None else int(count),
            device_ids=tuple(str(i) for i in dev.get("device_ids") or ()),
            capabilities=caps,
        ))
    return tuple(out)


def _extra_hosts(entries: tuple[str, ...]) -> dict[str, str]:
    return dict(e.split(":", 1) for e in entries)
