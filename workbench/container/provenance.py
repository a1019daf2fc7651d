"""Where a dev image came from: the fork's source state and what was installed in the container.

`invoke commit` writes these as image labels; `invoke up` reads them back to pick a committed image
that matches the fork (same commit, same patch series) and to say why it picked it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from workbench.container import labels
from workbench.fork.source import ForkState


def commit_labels(state: ForkState, install: dict, source_image: str, settings_image: str,
                  tag: str = "", container_id: str = "") -> dict[str, str]:
    """Provenance labels for a committed dev container (the OCI annotations beside them)."""
    from workbench import __version__

    oci = labels.oci("vLLM kernel workbench compiled dev image",
                     f"A dev container with the vLLM fork installed ({install.get('mode', 'none')}), committed",
                     __version__, source_image, state.commit or "")
    return {
        **oci,
        labels.ROLE: labels.ROLE_COMPILED,
        labels.IMAGE: settings_image,
        labels.TAG: tag,
        labels.COMMITTED_FROM: container_id,
        labels.SOURCE_IMAGE: source_image,
        labels.VLLM_COMMIT: state.commit or "unknown",
        labels.VLLM_BRANCH: state.branch or "(detached)",
        labels.VLLM_DIRTY: "true" if state.dirty else "false",
        labels.VLLM_DIRTY_FILES: str(len(state.dirty_files)),
        labels.PATCHES: ",".join(state.patches),
        labels.INSTALL_MODE: str(install.get("mode", "none")),
        labels.INSTALL_WHEEL: str(install.get("wheel", "")),
        labels.CUDA_ARCH_LIST: str(install.get("arch_list", "")),
        labels.COMMITTED_AT: oci[labels.OCI_CREATED],
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
    ordered = sorted(committed, key=lambda c: c["labels"].get(labels.COMMITTED_AT, ""), reverse=True)
    want_patches = ",".join(state.patches)
    stale = []
    for image in ordered:
        found = image["labels"]
        commit = found.get(labels.VLLM_COMMIT)
        series = found.get(labels.PATCHES, "")
        if state.commit and commit == state.commit and series == want_patches:
            mode = found.get(labels.INSTALL_MODE, "none")
            when = found.get(labels.COMMITTED_AT, "?")
            return ImageChoice(
                image["ref"],
                f"committed {when}, install {mode}: matches the fork (vllm {state.short}, "
                f"patches {want_patches or 'none'})",
                True,
            )
        stale.append(f"{image['ref']} is from vllm {str(commit)[:12]} patches {series or 'none'}")
    return ImageChoice(
        dev_ref,
        f"no committed image matches the fork (vllm {state.short}, patches {want_patches or 'none'}): "
        + "; ".join(stale[:2]),
        False,
    )
