"""Building the dev image from Dockerfile.dev through the daemon API, and finding committed images.

The build context is assembled in memory (Dockerfile.dev + docker/ + optional extra CA certificates)
with fixed tar metadata, so an unchanged tree hits the layer cache on every step.
"""

from __future__ import annotations

import io
import re
import shlex
import tarfile
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

from workbench import __version__
from workbench.config import Settings
from workbench.container import labels
from workbench.container.buildkit import Builder, build_argv, buildkit_dockerfile, find_builder, run_build
from workbench.errors import WorkbenchError

DOCKERFILE = "Dockerfile.dev"
_STEP = re.compile(r"^Step (\d+)/(\d+) : (.*)")
_LAYER = re.compile(r"^ ---> ([0-9a-f]{12,64})\s*$")  # the classic builder's image after a step
_REMOVED_CONTAINER = re.compile(r"^(?: ---> )?Removing intermediate container ")
# What a TLS failure looks like in apt's, pip's, curl's and git's output (intercepting proxies).
_TLS = re.compile(r"CERTIFICATE_VERIFY_FAILED|certificate verify failed|SSLError|SSL: |"
                  r"server certificate verification failed|Certificate verification failed|"
                  r"x509: certificate|self[- ]signed certificate|unable to get local issuer certificate", re.I)


class BuildFailed(WorkbenchError):
    """The build stopped at a step; ``log_tail`` holds the last lines of its output."""

    def __init__(self, message: str, log_tail: list[str]):
        super().__init__(message)
        self.log_tail = log_tail


@dataclass(frozen=True)
class BuildPlan:
    tag: str
    base_image: str
    buildargs: dict[str, str]
    context_files: tuple[str, ...]
    no_cache: bool
    base_reason: str = ""  # why this base image (the fork's release, or the configured one)
    labels: dict[str, str] = field(default_factory=dict)  # build-time labels (the OCI annotations)
    builder: Builder | None = None  # BuildKit through the docker CLI; None: the daemon's classic builder

    def with_base_torch(self, version: str | None) -> BuildPlan:
        """The plan recording the base image's torch as the dev image's ``labels.TORCH``."""
        return replace(self, buildargs={**self.buildargs, "BASE_TORCH": version or ""})

    def describe(self) -> str:
        args = " ".join(f"--build-arg {k}={v}" for k, v in sorted(self.buildargs.items()))
        marks = "".join(f" --label {shlex.quote(f'{k}={v}')}" for k, v in sorted(self.labels.items()))
        cache = " --no-cache" if self.no_cache else ""
        how = (f"{self.builder.command()} (BuildKit: {self.builder.why})" if self.builder
               else "docker build (the daemon's classic builder, through the docker SDK; no cache mounts)")
        return (f"{how} -f {DOCKERFILE} -t {self.tag} {args}{marks}{cache}  "
                f"(context: {', '.join(self.context_files)})")


def _add(tar: tarfile.TarFile, name: str, data: bytes, mode: int = 0o644) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(data), mode, 0  # fixed metadata: cache hits across builds
    tar.addfile(info, io.BytesIO(data))


def context_files(settings: Settings, ca_certs: str | None) -> dict[str, bytes]:
    """The files the build sees: Dockerfile.dev, docker/*, and extra CA certificates."""
    root = settings.root
    dockerfile = root / DOCKERFILE
    if not dockerfile.is_file():
        raise WorkbenchError(f"{dockerfile} not found: run invoke from the workbench checkout")
    files = {DOCKERFILE: dockerfile.read_bytes()}
    for path in sorted((root / "docker").rglob("*")):
        if path.is_file():
            files[path.relative_to(root).as_posix()] = path.read_bytes()
    if ca_certs:
        src = Path(ca_certs).expanduser()
        certs = sorted(src.glob("*.crt")) if src.is_dir() else []
        if not certs:
            raise WorkbenchError(
                f"--ca-certs {ca_certs}: no *.crt files there: point it at a folder of PEM certificates"
            )
        for cert in certs:
            files[f"docker/ca-certificates/{cert.name}"] = cert.read_bytes()
    return files


def plan_build(settings: Settings, no_cache: bool = False) -> tuple[BuildPlan, dict[str, bytes]]:
    """What `invoke build` builds: the base image follows the fork's release unless one is configured."""
    from workbench.container.versions import resolve_base_image

    files = context_files(settings, settings.ca_certs or None)
    base_image, reason = resolve_base_image(settings.base_image, settings.fork_path)
    buildargs = {
        "BASE_IMAGE": base_image,
        "BASE_TORCH": "",  # the base image's torch, read just before building (BuildPlan.with_base_torch)
        "USER_UID": str(settings.host_uid),
        "USER_GID": str(settings.host_gid),
        "WORKBENCH_VERSION": __version__,
    }
    oci = labels.oci("vLLM kernel workbench dev image",
                     "The vLLM release image with the tools for CUDA/Triton kernel work on a vLLM fork",
                     __version__, base_image)
    plan = BuildPlan(settings.image_ref, base_image, buildargs, tuple(sorted(files)), no_cache, reason, oci,
                     choose_builder(settings.builder))
    return plan, files


def choose_builder(setting: str) -> Builder | None:
    """workbench.builder: "auto" takes BuildKit where a docker CLI here has it, "buildkit" insists on it,
    "classic" uses the daemon's classic builder through the docker SDK."""
    if setting not in ("auto", "buildkit", "classic"):
        raise WorkbenchError(f"config workbench.builder is {setting!r}: use auto, buildkit or classic")
    if setting == "classic":
        return None
    builder = find_builder()
    if builder is None and setting == "buildkit":
        raise WorkbenchError("workbench.builder is buildkit but no docker CLI here builds with BuildKit: install "
                             "the buildx plugin (docker-buildx), or set workbench.builder to auto or classic")
    return builder


def _context_tar(files: dict[str, bytes]) -> io.BytesIO:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in sorted(files.items()):
            _add(tar, name, data, 0o755 if name.endswith(".sh") else 0o644)
    buf.seek(0)
    return buf


def build(client, plan: BuildPlan, files: dict[str, bytes], on_line: Callable[[str], None] = print) -> str:
    """Run the build (BuildKit where the plan has a builder, else the classic builder), streaming each output
    line to ``on_line``; returns the image id."""
    if plan.builder is not None:
        engine = daemon_engine(client)
        if engine == "Engine":
            dockerfile = buildkit_dockerfile(files[DOCKERFILE].decode()).encode()
            return _build_with_buildkit(plan, {**files, DOCKERFILE: dockerfile}, on_line)
        on_line(f"the daemon is {engine}, not Docker's engine: BuildKit through the docker CLI needs Docker's; "
                "building with the daemon's own build endpoint (no cache mounts)")
    return _build_classic(client, plan, files, on_line)


def daemon_engine(client) -> str:
    """The daemon's engine component: "Engine" for Docker's; Podman's Docker-compatible API says "Podman Engine"
    (its build endpoint is buildah's, and the docker CLI's BuildKit session does not work against it)."""
    try:
        components = client.version().get("Components") or []
    except Exception:  # a daemon that cannot say: assume Docker's, whose API the SDK speaks
        return "Engine"
    return next((c.get("Name", "") for c in components if "Engine" in c.get("Name", "")), "Engine")


def _build_with_buildkit(plan: BuildPlan, files: dict[str, bytes], on_line: Callable[[str], None]) -> str:
    """BuildKit through the docker CLI, on the daemon the SDK uses; it commits no intermediate images."""
    from workbench.container.daemon import host_description

    with tempfile.TemporaryDirectory(prefix="wb-build-") as scratch:
        iidfile = str(Path(scratch) / "iid")
        argv = build_argv(plan.builder, plan.tag, DOCKERFILE, plan.buildargs, plan.labels, plan.no_cache, iidfile)
        code, log, step = run_build(plan.builder, argv, _context_tar(files).getvalue(), on_line, host_description())
        if code != 0:
            errors = [line for line in log if "ERROR" in line or "error:" in line.lower()
                      or line.startswith("failed to solve")]
            message = errors[-1] if errors else f"{plan.builder.argv[0]} exited with {code}"
            raise BuildFailed(_explain_build_error(message, plan, step, log), log[-25:])
        return Path(iidfile).read_text().strip()


def _build_classic(client, plan: BuildPlan, files: dict[str, bytes], on_line: Callable[[str], None]) -> str:
    """The daemon's classic builder through the SDK. A failed build removes the layer images it committed
    itself (never the cache of earlier builds)."""
    log: list[str] = []
    step = "before the first step"
    image_id = None
    created: list[str] = []  # images this build committed (a "---> id" right after its step's container)
    after_container = False
    try:
        for chunk in _stream(client, plan, files):
            if "stream" in chunk:
                for line in chunk["stream"].splitlines():
                    if not line.strip():
                        continue
                    log.append(line)
                    if m := _STEP.match(line):
                        step = f"step {m.group(1)}/{m.group(2)} ({m.group(3)[:80]})"
                    if m := _LAYER.match(line):
                        if after_container:
                            created.append(m.group(1))
                        after_container = False
                    elif _REMOVED_CONTAINER.match(line):
                        after_container = True
                    on_line(line)
            elif "error" in chunk:
                message = chunk.get("errorDetail", {}).get("message") or chunk["error"]
                log.append(message)
                raise BuildFailed(_explain_build_error(message, plan, step, log), log[-25:])
            elif "aux" in chunk and "ID" in chunk["aux"]:
                image_id = chunk["aux"]["ID"]
    except BuildFailed:
        remove_images(client, created)
        raise
    if image_id is None:
        image = client.images.get(plan.tag)
        image_id = image.id
    return image_id


def remove_images(client, image_ids: list[str]) -> list[str]:
    """Remove untagged layer images, newest first, each alone (noprune: their parents may be another
    build's cache); images that are tagged or have children by now stay. Returns the ids removed."""
    from docker.errors import APIError, ImageNotFound

    removed = []
    for image_id in reversed(image_ids):
        try:
            if client.images.get(image_id).tags:
                continue
            client.images.remove(image_id, noprune=True)
            removed.append(image_id)
        except (ImageNotFound, APIError):
            continue
    return removed


def _stream(client, plan: BuildPlan, files: dict[str, bytes]) -> Iterator[dict]:
    from docker.errors import APIError

    try:
        yield from client.api.build(
            fileobj=_context_tar(files), custom_context=True, dockerfile=DOCKERFILE, tag=plan.tag,
            buildargs=plan.buildargs, nocache=plan.no_cache, rm=True, forcerm=True, decode=True, pull=False,
            labels=plan.labels,
        )
    except APIError as err:
        raise BuildFailed(_explain_build_error(err.explanation or str(err), plan, "before the first step"), []) from err


def _explain_build_error(message: str, plan: BuildPlan, step: str, log: list[str] | None = None) -> str:
    first = message.strip().splitlines()[0] if message.strip() else "unknown error"
    lowered = first.lower()
    # BuildKit resolves FROM while it creates its build graph ("failed to create LLB definition"), before any step.
    if "(FROM " in step or ("failed to create llb definition" in lowered and "parse error" not in lowered) or (
            any(s in lowered for s in ("pull access denied", "manifest unknown", "no such image"))
            and plan.base_image.split(":")[0] in first):
        return (f"base image {plan.base_image} is not available ({first}): docker pull it on a host with registry "
                "access, or pass --base-image with an image this daemon has")
    # The error chunk only says the step's command failed; pip/apt said why further up the log.
    for line in [message, *reversed(log or [])]:
        if m := _TLS.search(line):
            seen = line[max(0, m.start() - 60):m.end() + 40].strip()
            return (f"build failed at {step} with a TLS error (...{seen}...): add your proxy's CA certificates "
                    "with --ca-certs DIR (or drop *.crt files into docker/ca-certificates/)")
    return f"build failed at {step}: {first} (log tail above; fix the step, then invoke build again)"


def committed_images(client, settings: Settings, all_tags: bool = False) -> list[dict]:
    """Committed dev containers of this workbench image and tag (every tag with ``all_tags``), with their
    labels: a container of one tag never starts from another tag's committed image."""
    wanted = [f"{labels.ROLE}={labels.ROLE_COMPILED}", f"{labels.IMAGE}={settings.image}"]
    images = client.images.list(filters={"label": wanted})
    out = []
    for image in images:
        found = image.labels or {}
        tags = image.tags or [image.short_id]
        for tag in tags:
            # Images committed before the tag label existed belong to the tag their name says.
            own_tag = found.get(labels.TAG) or (settings.tag if tag == settings.compiled_ref else None)
            if all_tags or own_tag == settings.tag:
                out.append({"ref": tag, "id": image.id, "labels": found,
                            "created": image.attrs.get("Created", ""), "size": image.attrs.get("Size", 0)})
    return out
