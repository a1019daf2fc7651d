"""Every ``workbench.*`` label the workbench writes on or reads from an image or a container.

Labels are how a later `invoke up`, `status` or `install` learns what an earlier `build` or `commit`
made (and how a user finds them: ``docker images --filter label=workbench.role=compiled``), so their
keys are an interface. Dockerfile.dev writes the dev image's labels itself (``DEV_IMAGE``; a test
keeps its LABEL lines and this module in step) and docker-compose.yml declares ``MANAGED``.
"""

from __future__ import annotations

PREFIX = "workbench."

# The dev image, as Dockerfile.dev labels it at build time.
ROLE = f"{PREFIX}role"  # ROLE_DEV for `invoke build`'s image, ROLE_COMPILED for a committed container
VERSION = f"{PREFIX}version"  # the workbench that built the image
BASE_IMAGE = f"{PREFIX}base-image"
TORCH = f"{PREFIX}torch"  # the base image's torch, read before the build: install checks it against the fork
UID = f"{PREFIX}uid"  # the user the image runs as: files it writes into mounts are that host user's
GID = f"{PREFIX}gid"
DEV_IMAGE = (ROLE, VERSION, BASE_IMAGE, TORCH, UID, GID)

ROLE_DEV = "dev"
ROLE_COMPILED = "compiled"

# The dev container, as `invoke up` creates it.
MANAGED = f"{PREFIX}managed"  # "true": the workbench created it, so it may reuse, recreate or remove it
SPEC = f"{PREFIX}spec"  # fingerprint of the compose spec and image id it was created from (drift)
IMAGE_REASON = f"{PREFIX}image-reason"  # why `up` picked its image, for `invoke status`

# A committed dev container (`invoke commit`): where it came from and what it holds.
IMAGE = f"{PREFIX}image"  # the workbench.image setting it belongs to
TAG = f"{PREFIX}tag"  # the workbench.tag it was committed under: another tag never starts from it
COMMITTED_FROM = f"{PREFIX}committed-from"  # the id of the container it was committed from
COMMITTED_AT = f"{PREFIX}committed-at"
SOURCE_IMAGE = f"{PREFIX}source-image"
VLLM_COMMIT = f"{PREFIX}vllm.commit"
VLLM_BRANCH = f"{PREFIX}vllm.branch"
VLLM_DIRTY = f"{PREFIX}vllm.dirty"
VLLM_DIRTY_FILES = f"{PREFIX}vllm.dirty-files"
PATCHES = f"{PREFIX}patches"
INSTALL_MODE = f"{PREFIX}install.mode"
INSTALL_WHEEL = f"{PREFIX}install.wheel"
CUDA_ARCH_LIST = f"{PREFIX}cuda-arch-list"

# The OCI image-spec annotation keys, beside the workbench's own: what registries, `docker inspect` tooling and
# scanners read. Written by the build (build-time labels: applied after the last step, so the build cache
# holds) and by commit.
OCI = "org.opencontainers.image."
OCI_TITLE = f"{OCI}title"
OCI_DESCRIPTION = f"{OCI}description"
OCI_VERSION = f"{OCI}version"
OCI_CREATED = f"{OCI}created"
OCI_REVISION = f"{OCI}revision"
OCI_BASE_NAME = f"{OCI}base.name"
OCI_LICENSES = f"{OCI}licenses"
OCI_ALL = (OCI_TITLE, OCI_DESCRIPTION, OCI_VERSION, OCI_CREATED, OCI_REVISION, OCI_BASE_NAME, OCI_LICENSES)


def oci(title: str, description: str, version: str, base_name: str, revision: str = "") -> dict[str, str]:
    """The OCI annotations of an image the workbench makes, created now (RFC 3339, UTC)."""
    from datetime import datetime, timezone

    made = {OCI_TITLE: title, OCI_DESCRIPTION: description, OCI_VERSION: version, OCI_BASE_NAME: base_name,
            OCI_CREATED: datetime.now(timezone.utc).isoformat(timespec="seconds"), OCI_LICENSES: "Apache-2.0"}
    if revision:
        made[OCI_REVISION] = revision
    return made


ALL = (*DEV_IMAGE, MANAGED, SPEC, IMAGE_REASON, IMAGE, TAG, COMMITTED_FROM, COMMITTED_AT, SOURCE_IMAGE,
       VLLM_COMMIT, VLLM_BRANCH, VLLM_DIRTY, VLLM_DIRTY_FILES, PATCHES, INSTALL_MODE, INSTALL_WHEEL, CUDA_ARCH_LIST)
