"""`invoke status` shows each committed image's provenance whole, whatever the terminal's width: a log or a
narrow terminal folds cells onto more lines, and the vLLM commit is never cut."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from workbench import ui
from workbench.config import Settings
from workbench.container import labels
from workbench.container.status import Status

COMMIT = "c4c57d110c72aa5a0a2c9c0e9bd7c3f1d2e4b5a6"


@pytest.mark.parametrize("width", [60, 80, 200])
def test_the_committed_images_commit_survives_any_width(tmp_path, monkeypatch, width):
    out = io.StringIO()
    monkeypatch.setattr(ui, "console", Console(file=out, width=width, highlight=False, soft_wrap=True))
    image = {"ref": "wbtest-dev:dev-compiled-wbtest-fa8b479c", "id": "sha256:1", "created": "", "size": 0,
             "labels": {labels.VLLM_COMMIT: COMMIT, labels.VLLM_DIRTY: "false", labels.INSTALL_MODE: "precompiled",
                        labels.CUDA_ARCH_LIST: "9.0a", labels.COMMITTED_AT: "2026-11-30T17:41:05+00:00"}}
    state = Status(name="wbtest-fa8b479c", dev_image=None, container=None, committed=[image], docker_version="28")
    ui.print_status(Settings.from_mapping(tmp_path, {}), state, drift="")
    text = out.getvalue()
    assert "committed images" in text and COMMIT[:12] in text
    assert "…" not in text, "a cell was cut rather than folded"
