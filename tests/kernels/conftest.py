"""custom_kernels tests: make the package importable and run Triton on the CPU where there's no GPU.

TRITON_INTERPRET must be set before anything imports Triton (Triton reads it when its own jit
functions are decorated), so it is set here, when this folder's tests are collected.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

PACKAGE_ROOT = Path(__file__).resolve().parents[2] / "custom_kernels"


def _has_cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False


if not _has_cuda():
    os.environ.setdefault("TRITON_INTERPRET", "1")
# This checkout's package wins over any installed copy (the tests test the code next to them).
sys.path.insert(0, str(PACKAGE_ROOT))


@pytest.fixture
def interpreter():
    """Skip-proof guard: on the CPU the kernels must really run in Triton's interpreter."""
    pytest.importorskip("triton")
    import triton.language as tl

    if os.environ.get("TRITON_INTERPRET") != "1":
        pytest.skip("TRITON_INTERPRET is not 1 (a GPU is present: the gpu tier covers the kernels)")
    if type(tl.cdiv).__name__ == "JITFunction":
        pytest.fail("triton was imported before TRITON_INTERPRET=1 was set in this process: "
                    "run `pytest tests/kernels` on its own, or set TRITON_INTERPRET=1 in the environment")
    return True
