"""'Did my kernel run?' — per-layer call counters.

What the host counters count: the times the op's Python implementation ran, i.e. eager calls, calls
from a torch.compile'd graph (the op is opaque to the compiler, so the compiled code calls it every
step), and CUDA-graph *captures*. A CUDA-graph *replay* runs no Python, so it adds nothing: under
vLLM's default (compile + CUDA graphs) a layer shows a handful of calls (profile run + one per
captured batch size), not one per decode step. That is still proof the op was wired in; for
"how often did it run on the GPU" use the device counters (opt-in, below) or a profiler trace
(custom_kernels.profiling).

Device counters: after ``enable_device_counts()`` (or CUSTOM_KERNELS_DEVICE_COUNTS=1) each call also
adds 1 to a per-layer int64 slot on the GPU. That add is a kernel, so it is captured into CUDA
graphs and counts every replay. It costs one tiny launch per GEMM: a debugging aid, not for timing.
"""

from __future__ import annotations

import os
import threading

import torch

# layer prefix (class name when a layer has none, "<unnamed>" for None) -> host calls: the contract's
# CALL_COUNTS (the same dict object is re-exported by the package).
CALL_COUNTS: dict[str, int] = {}
# layer prefix -> kernel name -> host calls: which implementation the dispatcher chose.
KERNEL_COUNTS: dict[str, dict[str, int]] = {}
# layer prefix -> "routed: why" / "skipped: why": the once-per-layer routing decisions of the vLLM plugin.
ROUTING: dict[str, str] = {}

_SLOTS = 4096
_lock = threading.Lock()
_device_enabled = os.environ.get("CUSTOM_KERNELS_DEVICE_COUNTS", "0") not in ("", "0")
_device_slabs: dict[torch.device, torch.Tensor] = {}
_slot_of: dict[str, int] = {}


def record_call(layer: str, kernel: str) -> None:
    """Count one host-side call of ``layer`` that dispatched to ``kernel``."""
    with _lock:
        CALL_COUNTS[layer] = CALL_COUNTS.get(layer, 0) + 1
        per_layer = KERNEL_COUNTS.setdefault(layer, {})
        per_layer[kernel] = per_layer.get(kernel, 0) + 1


def record_routing(layer: str, routed: bool, why: str) -> None:
    """Remember whether ``layer`` routes through the op (decided once, when its weights are loaded)."""
    with _lock:
        ROUTING[layer] = f"{'routed' if routed else 'skipped'}: {why}"


def enable_device_counts(enabled: bool = True, device: torch.device | str | None = None) -> None:
    """Turn device-side counting on (allocating the counter slab now, outside any graph capture)."""
    global _device_enabled
    _device_enabled = enabled
    if enabled and torch.cuda.is_available():
        _slab(torch.device(device) if device is not None else torch.device("cuda", torch.cuda.current_device()))


def _slab(device: torch.device) -> torch.Tensor | None:
    slab = _device_slabs.get(device)
    if slab is None:
        if torch.cuda.is_current_stream_capturing():
            return None  # allocating now would capture a memset that zeroes the slab at each replay
        slab = _device_slabs[device] = torch.zeros(_SLOTS, dtype=torch.int64, device=device)
    return slab


def record_device_call(layer: str, device: torch.device) -> None:
    """If device counting is on, add 1 to the layer's GPU slot (captured into CUDA graphs)."""
    if not _device_enabled or device.type != "cuda":
        return
    slab = _slab(device)
    if slab is None:
        return
    with _lock:
        slot = _slot_of.setdefault(layer, len(_slot_of))
    if slot < _SLOTS:
        slab[slot : slot + 1].add_(1)


def device_call_counts() -> dict[str, int]:
    """Per-layer GPU-side call counts (synchronizes); empty when device counting is off."""
    totals: dict[str, int] = {}
    for slab in _device_slabs.values():
        values = slab.cpu().tolist()
        for layer, slot in _slot_of.items():
            if slot < _SLOTS and values[slot]:
                totals[layer] = totals.get(layer, 0) + values[slot]
    return totals


def reset_counts() -> None:
    """Zero every counter (host and device)."""
    with _lock:
        CALL_COUNTS.clear()
        KERNEL_COUNTS.clear()
        for slab in _device_slabs.values():
            slab.zero_()
