"""`invoke status`: what exists now — dev image, container, committed images, GPU runtime."""

from __future__ import annotations

from dataclasses import dataclass, field

from workbench.config import Settings
from workbench.container import compose, images, labels
from workbench.container.daemon import find_container, nvidia_runtime_present
from workbench.container.lifecycle import committed_from_itself, desired


@dataclass
class Status:
    name: str  # the container docker-compose.yml names
    dev_image: dict | None
    container: dict | None
    committed: list[dict] = field(default_factory=list)
    nvidia_runtime: bool = False
    docker_version: str = ""
    found: object = field(default=None, repr=False)  # the container itself, looked up once for drift

    def to_dict(self, drift: str) -> dict:
        """What `invoke status` shows, as data (its --json); ``drift`` as ``drift()`` says it."""
        container = None if self.container is None else {**self.container, "drift": drift}
        return {"docker_version": self.docker_version, "nvidia_runtime": self.nvidia_runtime,
                "container_name": self.name, "dev_image": self.dev_image, "container": container,
                "committed": [{"ref": c["ref"], "id": c["id"], "created": c["created"], "size": c["size"],
                               "labels": c["labels"]} for c in self.committed]}

    def committed_table(self) -> tuple[tuple[str, ...], list[tuple[str, ...]]]:
        """Columns and rows of the committed images, read from their provenance labels."""
        columns = ("image", "vllm commit", "dirty", "patches", "install", "arch", "committed at")
        rows = [(c["ref"], c["labels"].get(labels.VLLM_COMMIT, "?")[:12], c["labels"].get(labels.VLLM_DIRTY, "?"),
                 c["labels"].get(labels.PATCHES, "") or "-", c["labels"].get(labels.INSTALL_MODE, "?"),
                 c["labels"].get(labels.CUDA_ARCH_LIST, "") or "-", c["labels"].get(labels.COMMITTED_AT, "?"))
                for c in self.committed]
        return columns, rows


def collect(client, settings: Settings) -> Status:
    from docker.errors import ImageNotFound

    info = client.info()
    try:
        image = client.images.get(settings.image_ref)
        built = image.labels or {}
        dev_image = {"ref": settings.image_ref, "id": image.short_id, "created": image.attrs.get("Created", "")[:19],
                     "size_gb": image.attrs.get("Size", 0) / 1e9, "base": built.get(labels.BASE_IMAGE, "?"),
                     "uid": f"{built.get(labels.UID, '?')}:{built.get(labels.GID, '?')}"}
    except ImageNotFound:
        dev_image = None
    name = compose.load_spec(settings).name
    container = None
    found = find_container(client, name)
    if found is not None:
        own = found.labels or {}
        requests = found.attrs.get("HostConfig", {}).get("DeviceRequests") or []
        gpus = ", ".join(",".join(r.get("DeviceIDs") or []) or ("all" if r.get("Count") == -1 else str(r.get("Count")))
                         for r in requests) or "none"
        image_name = (found.image.tags or [found.image.short_id])[0]
        container = {"name": found.name, "status": found.status, "image": image_name,
                     "managed": own.get(labels.MANAGED) == "true", "gpus": gpus,
                     "spec": own.get(labels.SPEC, ""), "reason": own.get(labels.IMAGE_REASON, "")}
    committed = images.committed_images(client, settings, all_tags=True)
    if container is not None:
        # The newest image committed from this container (its image-reason label predates the commit).
        mine = sorted((c for c in committed if c["labels"].get(labels.COMMITTED_FROM) == found.id),
                      key=lambda c: c["labels"].get(labels.COMMITTED_AT, ""), reverse=True)
        container["committed_as"] = (f"{mine[0]['ref']} at {mine[0]['labels'].get(labels.COMMITTED_AT, '?')}"
                                     if mine else "")
    return Status(name, dev_image, container, committed, nvidia_runtime_present(info), info.get("ServerVersion", ""),
                  found)


def drift(client, settings: Settings, status: Status) -> str:
    """"" when the container matches what `invoke up` would create now, else why not."""
    if status.container is None:
        return ""
    gpus = "none" if status.container["gpus"] == "none" else settings.gpus
    try:
        spec, choice, fingerprint = desired(client, settings, gpus)
        if fingerprint == status.container["spec"]:
            return ""
        if committed_from_itself(client, status.found, spec, choice):
            return ""
    except Exception as err:  # status must always print; show the problem instead
        return f"cannot tell ({err})"
    return "differs from docker-compose.yml/config: invoke up recreates it"
