"""Fixtures the bench tests share."""

from __future__ import annotations

import json

import pytest

from support.model_configs import TINY_QWEN2


@pytest.fixture
def tiny(tmp_path) -> str:
    """A model config the session completes into folders (tokenizer; seeded weights for the gate)."""
    (tmp_path / "tiny").mkdir()
    (tmp_path / "tiny" / "config.json").write_text(json.dumps(TINY_QWEN2))
    return str(tmp_path / "tiny" / "config.json")
