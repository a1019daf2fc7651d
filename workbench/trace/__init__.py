"""Tracing of the inference path: module calls (hooks), CUDA kernels (torch.profiler) and kernel -> source.

Import-safe without invoke, docker or vLLM (the scripts under scripts/ use it inside the container):
``ModuleTracer`` works on any ``nn.Module``; ``build_index`` scans a vLLM tree's csrc/ for kernels;
``kernels_from_trace`` turns a Chrome trace into the kernel table. Records are dataclasses saved as JSON.
Names load lazily, so the host-side ``invoke trace`` (workbench.trace.command) never imports torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "KernelIndex": "kernel_map", "KernelSource": "kernel_map", "build_index": "kernel_map",
    "kernels_from_trace": "kernels", "profile_to_chrome_trace": "kernels",
    "ModuleTracer": "modules", "find_decoder_layers": "modules", "operator_summary": "modules",
    "load_trace": "records", "save_trace": "records",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"workbench.trace.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'workbench.trace' has no attribute {name!r}")
