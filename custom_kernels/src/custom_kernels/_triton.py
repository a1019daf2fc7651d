"""Is Triton usable here? Answered without importing it.

Triton decides between compiling and interpreting (``TRITON_INTERPRET=1``) when its own
``@triton.jit`` functions are decorated, i.e. at ``import triton``. So the package never imports
Triton at import time: the kernel modules (gemm/launchers.py, gemm/triton_kernels.py) are imported
on the first launch, and a test can still switch the interpreter on before that.
"""

from __future__ import annotations

import importlib.util
import os

HAS_TRITON = importlib.util.find_spec("triton") is not None


def interpreter_enabled() -> bool:
    """True when Triton runs kernels on the CPU through its interpreter (TRITON_INTERPRET=1)."""
    return HAS_TRITON and os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def triton_usable(device) -> bool:
    """Can a Triton kernel run on tensors of this device (CUDA, or CPU through the interpreter)?"""
    if not HAS_TRITON:
        return False
    if getattr(device, "type", device) == "cuda":
        return True
    return interpreter_enabled()
