"""Optional Triton import: the package imports on machines without Triton (or without CUDA).

``TRITON_INTERPRET=1`` must be set before the kernel modules are imported (Triton picks the
interpreter when ``@triton.jit`` runs), which is why the kernel modules are imported lazily.
"""

from __future__ import annotations

import os

try:  # Triton is optional at import time (CPU-only installs, docs builds).
    import triton
    import triton.language as tl

    HAS_TRITON = True
except ImportError:  # pragma: no cover - exercised only where Triton is absent
    triton = None
    tl = None
    HAS_TRITON = False


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
