"""custom_kernels' tests (tests/ beside this file) run on their own (`cd custom_kernels && pytest`) or as
part of the workbench's suite: this file makes the package next to it the one imported, runs Triton in its
CPU interpreter where there is no GPU, and skips the `gpu` tests there with the reason.

TRITON_INTERPRET must be set before anything imports Triton (Triton reads it when its own jit functions
are decorated, which happens when the package is imported), so it is set here, before collection.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

PACKAGE_ROOT = Path(__file__).resolve().parent


def _has_cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False


if not _has_cuda():
    os.environ.setdefault("TRITON_INTERPRET", "1")
# This checkout's package wins over any installed copy (the tests test the code next to them).
sys.path.insert(0, str(PACKAGE_ROOT / "src"))


@pytest.fixture
def interpreter():
    """Skip-proof guard: on the CPU the kernels must really run in Triton's interpreter."""
    pytest.importorskip("triton")
    import triton.language as tl

    if os.environ.get("TRITON_INTERPRET") != "1":
        pytest.skip("TRITON_INTERPRET is not 1 (a GPU is present: the gpu tier covers the kernels)")
    if type(tl.cdiv).__name__ == "JITFunction":
        pytest.fail("triton was imported before TRITON_INTERPRET=1 was set in this process: "
                    "run `pytest custom_kernels/tests` on its own, or set TRITON_INTERPRET=1 in the environment")
    return True


def pytest_configure(config):
    config.addinivalue_line("markers", "gpu: needs CUDA (an NVIDIA H100/H200); skipped where there is none")


def pytest_collection_modifyitems(config, items):
    if _has_cuda():
        return
    skip = pytest.mark.skip(reason="gpu tier skipped: no CUDA device on this host (the gpu tier runs on an H100/H200 "
                                   "host)")
    for item in items:
        if item.get_closest_marker("gpu") and Path(str(item.fspath)).is_relative_to(PACKAGE_ROOT):
            item.add_marker(skip)
