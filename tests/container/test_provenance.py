"""Where a dev image came from: the committed image `up` prefers for the fork's state (read from git:
tests/fork/test_source.py), the install record read back, and the labels a commit writes."""

from __future__ import annotations

from pathlib import Path

from workbench.container import labels, provenance
from workbench.fork.source import ForkState


def _committed(ref, commit, patches="", at="2026-01-01T00:00:00+00:00"):
    return {"ref": ref, "labels": {labels.VLLM_COMMIT: commit, labels.PATCHES: patches,
                                   labels.COMMITTED_AT: at, labels.INSTALL_MODE: "precompiled"}}


def test_choose_image_prefers_newest_matching_commit():
    state = ForkState(Path("."), True, "a" * 40, "main", patches=("0001-x.patch",))
    choice = provenance.choose_image("img:dev", [
        _committed("img:old", "a" * 40, "0001-x.patch", "2026-01-01T00:00:00+00:00"),
        _committed("img:new", "a" * 40, "0001-x.patch", "2026-02-01T00:00:00+00:00"),
        _committed("img:other", "b" * 40, "0001-x.patch", "2026-03-01T00:00:00+00:00"),
    ], state)
    assert choice.ref == "img:new" and choice.committed and "matches the fork" in choice.reason


def test_choose_image_explains_stale():
    state = ForkState(Path("."), True, "a" * 40, "main")
    choice = provenance.choose_image("img:dev", [_committed("img:c", "b" * 40)], state)
    assert choice.ref == "img:dev" and not choice.committed
    assert "no committed image matches" in choice.reason and "img:c is from vllm bbbbbbbbbbbb" in choice.reason
    patched = provenance.choose_image("img:dev", [_committed("img:c", "a" * 40, "p.patch")], state)
    assert patched.ref == "img:dev"


def test_install_record_parsing():
    assert provenance.parse_install_record(None) == {"mode": "none"}
    assert provenance.parse_install_record('{"mode": "precompiled", "arch_list": "9.0a"}')["arch_list"] == "9.0a"
    assert provenance.parse_install_record("{broken")["mode"].startswith("unknown")


def test_commit_labels_are_what_choose_image_reads_back():
    """A commit's labels carry the fork's state and the install record; `up` matches on exactly those."""
    state = ForkState(Path("."), True, "c" * 40, None, dirty_files=("setup.py",), patches=("0001-x.patch",))
    made = provenance.commit_labels(state, {"mode": "full", "arch_list": "9.0a"}, "img:dev", "img", "dev", "cid")
    assert set(made) <= set(labels.ALL) | set(labels.OCI_ALL) and made[labels.ROLE] == labels.ROLE_COMPILED
    # the OCI annotations say the same: the fork's commit, the image it was committed from, when
    assert (made[labels.OCI_REVISION], made[labels.OCI_BASE_NAME]) == ("c" * 40, "img:dev")
    assert made[labels.OCI_CREATED] == made[labels.COMMITTED_AT] and made[labels.OCI_CREATED].endswith("+00:00")
    assert (made[labels.VLLM_BRANCH], made[labels.VLLM_DIRTY], made[labels.VLLM_DIRTY_FILES]) == ("(detached)",
                                                                                                 "true", "1")
    assert (made[labels.TAG], made[labels.COMMITTED_FROM], made[labels.CUDA_ARCH_LIST]) == ("dev", "cid", "9.0a")
    choice = provenance.choose_image("img:dev", [{"ref": "img:dev-compiled", "labels": made}], state)
    assert choice.committed and "install full" in choice.reason
