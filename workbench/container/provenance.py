"""Where a dev image came from: the fork's source state and what was installed in the container.

`invoke commit` writes these as image labels; `invoke up` reads them back to pick a committed image
that matches the fork (same commit, same patch series) and to say why it picked it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timezone

from workbench.fork.source import ForkState

LABEL_PREFIX = "workbench."
INSTALL_RECORD = "/opt/workbench/install.json"  # written by `invoke install` inside the container


TAG_LABEL = f"{LABEL_PREFIX}tag"  # the workbench.tag the image was committed under
CONTAINER_LABEL = f"{LABEL_PREFIX}committed-from"  # the id of the container it was committed from


def commit_labels(state: ForkState, install: dict, source_image: str, settings_image: str,
                  tag: str = "", container_id: str = "") -> dict[str, str]:
    """Provenance labels for a committed dev container."""
    return {
        f"{LABEL_PREFIX}role": "compiled",
        f"{LABEL_PREFIX}image": settings_image,
        TAG_LABEL: tag,
        CONTAINER_LABEL: container_id,
        f"{LABEL_PREFIX}source-image": source_image,
        f"{LABEL_PREFIX}vllm.commit": state.commit or "unknown",
        f"{LABEL_PREFIX}vllm.branch": state.branch or "(detached)",
        f"{LABEL_PREFIX}vllm.dirty": "true" if state.dirty else "false",
        f"{LABEL_PREFIX}vllm.dirty-files": str(len(state.dirty_files)),
        f"{LABEL_PREFIX}patches": ",".join(state.patches),
        f"{LABEL_PREFIX}install.mode": str(install.get("mode", "none")),
        f"{LABEL_PREFIX}install.wheel": str(install.get("wheel", "")),
        f"{LABEL_PREFIX}cuda-arch-list": str(install.get("arch_list", "")),
        f"{LABEL_PREFIX}committed-at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def parse_install_record(text: str | None) -> dict:
    """The container's install record, or mode "none" when nothing was installed yet."""
    if not text:
        return {"mode": "none"}
    try:
        record = json.loads(text)
    except json.JSONDecodeError:
        return {"mode": "unknown (unreadable install record)"}
    return record if isinstance(record, dict) else {"mode": "unknown"}


@dataclass(frozen=True)
class ImageChoice:
    ref: str
    reason: str
    committed: bool


def choose_image(dev_ref: str, committed: list[dict], state: ForkState) -> ImageChoice:
    """Prefer the newest committed image whose labels match the fork's commit and patch series.

    ``committed`` holds dicts with "ref" and "labels". A committed image is only reused when it was
    made from the same fork commit and the same patches, because its installed build matches those;
    Python edits since (the dirty state) are picked up live through the editable install.
    """
    if not committed:
        return ImageChoice(dev_ref, "no committed image yet (invoke commit makes one)", False)
    ordered = sorted(committed, key=lambda c: c["labels"].get(f"{LABEL_PREFIX}committed-at", ""), reverse=True)
    want_patches = ",".join(state.patches)
    stale = []
    for image in ordered:
        labels = image["labels"]
        commit = labels.get(f"{LABEL_PREFIX}vllm.commit")
        patches = labels.get(f"{LABEL_PREFIX}patches", "")
        if state.commit and commit == state.commit and patches == want_patches:
            mode = labels.get(f"{LABEL_PREFIX}install.mode", "none")
            when = labels.get(f"{LABEL_PREFIX}committed-at", "?")
            return ImageChoice(
                image["ref"],
                f"committed {when}, install {mode}: matches the fork (vllm {state.short}, "
                f"patches {want_patches or 'none'})",
                True,
            )
        stale.append(f"{image['ref']} is from vllm {str(commit)[:12]} patches {patches or 'none'}")
    return ImageChoice(
        dev_ref,
        f"no committed image matches the fork (vllm {state.short}, patches {want_patches or 'none'}): "
        + "; ".join(stale[:2]),
        False,
    )
