"""`invoke status`: what exists now — dev image, container, committed images, GPU runtime."""

from __future__ import annotations

from dataclasses import dataclass, field

from workbench.config import Settings
from workbench.container import images
from workbench.container.engine import MANAGED_LABEL, SPEC_LABEL, find_container, nvidia_runtime_present
from workbench.container.provenance import CONTAINER_LABEL


@dataclass
class Status:
    dev_image: dict | None
    container: dict | None
    committed: list[dict] = field(default_factory=list)
    nvidia_runtime: bool = False
    docker_version: str = ""


def collect(client, settings: Settings) -> Status:
    from docker.errors import ImageNotFound

    info = client.info()
    try:
        image = client.images.get(settings.image_ref)
        labels = image.labels or {}
        dev_image = {"ref": settings.image_ref, "id": image.short_id, "created": image.attrs.get("Created", "")[:19],
                     "size_gb": image.attrs.get("Size", 0) / 1e9, "base": labels.get("workbench.base-image", "?"),
                     "uid": f"{labels.get('workbench.uid', '?')}:{labels.get('workbench.gid', '?')}"}
    except ImageNotFound:
        dev_image = None
    container = None
    found = find_container(client, settings.container)
    if found is not None:
        labels = found.labels or {}
        requests = found.attrs.get("HostConfig", {}).get("DeviceRequests") or []
        gpus = ", ".join(",".join(r.get("DeviceIDs") or []) or ("all" if r.get("Count") == -1 else str(r.get("Count")))
                         for r in requests) or "none"
        image_name = (found.image.tags or [found.image.short_id])[0]
        container = {"name": found.name, "status": found.status, "image": image_name,
                     "managed": labels.get(MANAGED_LABEL) == "true", "gpus": gpus,
                     "spec": labels.get(SPEC_LABEL, ""), "reason": labels.get("workbench.image-reason", "")}
    committed = images.committed_images(client, settings, all_tags=True)
    if container is not None:
        # The newest image committed from this container (its image-reason label predates the commit).
        own = sorted((c for c in committed if c["labels"].get(CONTAINER_LABEL) == found.id),
                     key=lambda c: c["labels"].get("workbench.committed-at", ""), reverse=True)
        container["committed_as"] = (f"{own[0]['ref']} at {own[0]['labels'].get('workbench.committed-at', '?')}"
                                     if own else "")
    return Status(dev_image, container, committed, nvidia_runtime_present(info), info.get("ServerVersion", ""))


def drift(client, settings: Settings, status: Status) -> str:
    """"" when the container matches what `invoke up` would create now, else why not."""
    if status.container is None:
        return ""
    from workbench.container.engine import committed_from_itself, desired, find_container

    gpus = "none" if status.container["gpus"] == "none" else settings.gpus
    try:
        spec, choice, fingerprint = desired(client, settings, gpus)
        if fingerprint == status.container["spec"]:
            return ""
        container = find_container(client, settings.container)
        if container is not None and committed_from_itself(client, container, spec, choice):
            return ""
    except Exception as err:  # status must always print; show the problem instead
        return f"cannot tell ({err})"
    return "differs from docker-compose.yml/config: invoke up recreates it"
