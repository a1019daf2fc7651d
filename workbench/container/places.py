"""Where the project's folders are inside the dev container, read from the compose file's mounts.

There is no second list of container paths: plans, `--dry-run` and the runtime all take them from
``container_places`` and map host files through ``MountMap``; neither needs a daemon.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from workbench.config import Settings
from workbench.container import compose
from workbench.errors import WorkbenchError
from workbench.runtime import GUEST, Places, posix

# Where the dev image keeps the workbench's state, the install record among it: inside the image (not a
# mount), so `invoke commit` carries the record with the build it describes. Dockerfile.dev creates it
# for the image's user.
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
