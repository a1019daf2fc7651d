"""Versions that must fit together: the vLLM release the fork is, the base image built for that release
(vllm/vllm-openai:v<release>), and the torch the fork's requirements pin, which the image must carry
(a vLLM built against another torch fails the ABI check only after a long install)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from workbench.container import labels
from workbench.errors import WorkbenchError
from workbench.fork import series

BASE_IMAGE_REPOSITORY = "vllm/vllm-openai"  # vLLM's release images, tagged v<release>
# Where a vLLM checkout pins torch for CUDA, most specific first: the runtime requirements, then the
# build requirements (requirements/build.txt up to ~0.2x, requirements/build/cuda.txt later), then the
# PEP 517 build-system table.
TORCH_PIN_FILES = ("requirements/cuda.txt", "requirements/build/cuda.txt", "requirements/build.txt")
# The platform the dev image runs on, for requirement markers.
_LINUX = {"platform_machine": "x86_64", "platform_system": "Linux", "sys_platform": "linux", "os_name": "posix"}
TORCH_PROBE = "import torch; print(torch.__version__)"


def fork_release(fork: Path) -> tuple[str, str]:
    """The vLLM release the fork is based on and where that was read (series.detect_version)."""
    return series.detect_version(fork)


def base_image_for(version: str) -> str:
    return f"{BASE_IMAGE_REPOSITORY}:v{version}"


def release_or_pinned(fork: Path) -> tuple[str, str]:
    """The fork's release and where it was read, else the release the project pins (a build or a memory
    plan needs no fork checkout), saying so."""
    from workbench.fork.source import PINNED_VERSION

    try:
        version, source = fork_release(fork)
    except WorkbenchError:
        return PINNED_VERSION, f"the project's pinned release: no release readable from {fork}"
    return version, f"the fork's release, {source}"


def resolve_base_image(configured: str, fork: Path) -> tuple[str, str]:
    """The base image to build on and why: the configured one (--base-image / workbench.base_image), else
    the release image of the fork's vLLM version."""
    if configured:
        return configured, "--base-image / workbench.base_image"
    version, source = release_or_pinned(fork)
    return base_image_for(version), source


@dataclass(frozen=True)
class TorchPin:
    specifier: str  # e.g. "==2.9.0"
    source: str  # the file it was read from, relative to the fork

    def allows(self, version: str) -> bool:
        from packaging.specifiers import SpecifierSet
        from packaging.version import InvalidVersion, Version

        try:
            # A local label (2.9.0+cu129) is allowed by ==2.9.0, as pip allows it.
            return SpecifierSet(self.specifier).contains(Version(version), prereleases=True)
        except InvalidVersion:
            return False


def _torch_requirement(lines: list[str]) -> str | None:
    from packaging.requirements import InvalidRequirement, Requirement

    for raw in lines:
        line = raw.split(" #", 1)[0].strip()
        if not line or line.startswith(("#", "-")):
            continue
        try:
            req = Requirement(line)
        except InvalidRequirement:
            continue
        if req.name.lower() == "torch" and req.specifier and (req.marker is None or req.marker.evaluate(_LINUX)):
            return str(req.specifier)
    return None


def _build_requires(text: str) -> list[str]:
    """[build-system] requires of a pyproject.toml (tomllib from Python 3.11; a quoted-string scan before)."""
    try:
        import tomllib
    except ImportError:  # Python 3.10
        block = re.search(r"^\[build-system\].*?^requires\s*=\s*\[(.*?)\]", text, re.S | re.M)
        return re.findall(r"[\"']([^\"']+)[\"']", block.group(1)) if block else []
    try:
        requires = tomllib.loads(text).get("build-system", {}).get("requires", [])
    except tomllib.TOMLDecodeError:
        return []
    return [str(r) for r in requires]


def torch_pin(fork: Path) -> TorchPin | None:
    """The torch version the fork's requirements pin for CUDA, or None when it pins none."""
    fork = Path(fork)
    for name in TORCH_PIN_FILES:
        path = fork / name
        if path.is_file():
            spec = _torch_requirement(path.read_text(errors="replace").splitlines())
            if spec:
                return TorchPin(spec, name)
    pyproject = fork / "pyproject.toml"
    if pyproject.is_file():
        spec = _torch_requirement(_build_requires(pyproject.read_text(errors="replace")))
        if spec:
            return TorchPin(spec, "pyproject.toml [build-system]")
    return None


def image_torch(client, image_ref: str) -> str | None:
    """The torch version an image carries: its ``labels.TORCH`` when `invoke build` recorded one,
    else `python3 -c 'import torch'` in a throwaway container of it. None: no python3 or no torch."""
    from docker.errors import ContainerError, ImageNotFound

    try:
        image = client.images.get(image_ref)
    except ImageNotFound:
        return None
    label = (image.labels or {}).get(labels.TORCH)
    if label:
        return label
    try:
        out = client.containers.run(image.id, ["python3", "-c", TORCH_PROBE], entrypoint=[], remove=True,
                                    network_disabled=True, stdout=True, stderr=False)
    except ContainerError:
        return None
    text = out.decode(errors="replace").strip().splitlines()
    return text[-1].strip() if text and re.match(r"^\d+\.\d+", text[-1].strip()) else None


@dataclass(frozen=True)
class TorchCheck:
    """The image's torch against the fork's pin: ``ok`` False only on a real mismatch."""

    ok: bool
    message: str


def compare_torch(image_ref: str, image_torch_version: str | None, pin: TorchPin | None, release: str) -> TorchCheck:
    """Whether the image's torch is the one the fork pins; unknown on either side is not a mismatch."""
    if pin is None:
        return TorchCheck(True, f"the fork pins no torch version: {image_ref}'s torch not checked")
    if image_torch_version is None:
        return TorchCheck(True, f"{image_ref} has no importable torch: not checked against the fork's "
                                f"torch{pin.specifier} ({pin.source})")
    if pin.allows(image_torch_version):
        return TorchCheck(True, f"{image_ref} has torch {image_torch_version}, as the fork pins "
                                f"(torch{pin.specifier}, {pin.source})")
    return TorchCheck(False, f"{image_ref} has torch {image_torch_version} but the fork (vLLM {release}) pins "
                             f"torch{pin.specifier} ({pin.source})")


def check_base_image(client, image_ref: str, fork: Path) -> tuple[TorchCheck, str | None]:
    """Before a build: the base image's torch against the fork's pin (and that torch version)."""
    torch = image_torch(client, image_ref)
    try:
        release = fork_release(fork)[0]
    except WorkbenchError:
        release = "?"
    return compare_torch(image_ref, torch, torch_pin(fork), release), torch


def torch_fix(fork: Path, image_ref: str, action: str) -> str:
    """What to do about a torch mismatch before ``action`` ("build" or "install")."""
    try:
        wanted = base_image_for(fork_release(fork)[0])
    except WorkbenchError:
        wanted = None
    skip = f"or pass --allow-torch-mismatch to {action} anyway"
    if action == "install":
        return (f"rebuild the dev image on the fork's release image ({wanted or 'an image with that torch'}): "
                f"invoke build, then invoke up --recreate; {skip}")
    if wanted and wanted != image_ref:
        return f"build on the fork's release image: invoke build --base-image {wanted}; {skip}"
    return (f"the fork's requirements moved past its release image: build on an image with that torch "
            f"(--base-image IMAGE); {skip}")


def check_install_image(client, ref: str, fork: Path) -> TorchCheck:
    """Before an install: the torch of the image it installs into (``lifecycle.installed_image``; its
    ``labels.TORCH``, else probed) against the fork's pin."""
    try:
        release = fork_release(fork)[0]
    except WorkbenchError:
        release = "?"
    return compare_torch(ref[:19] if ref.startswith("sha256:") else ref, image_torch(client, ref),
                         torch_pin(fork), release)
