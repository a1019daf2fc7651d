"""Custom GEMM kernels for vLLM's unquantized linear layers.

The contract with vLLM (the patch series and the plugin route both call it):
``unquantized_gemm(layer, x, weight, bias=None)`` computes ``x @ weight.T + bias`` for a weight of
shape [N, K] and any leading dims of ``x``, exactly like ``torch.nn.functional.linear``. It goes
through the torch custom op ``torch.ops.custom_kernels.linear`` (torch.compile- and CUDA-graph-safe),
which runs the tuned winner for the GPU, dtype, shape and M bucket, and cuBLAS everywhere else.
"""

from __future__ import annotations

import torch

from .counters import (
    CALL_COUNTS,
    KERNEL_COUNTS,
    ROUTING,
    device_call_counts,
    enable_device_counts,
    reset_counts,
)
from .op import force_kernel, linear, route_decision, select_kernel

__version__ = "0.2.0"
__all__ = [
    "CALL_COUNTS",
    "KERNEL_COUNTS",
    "ROUTING",
    "device_call_counts",
    "enable_device_counts",
    "force_kernel",
    "linear",
    "reset_counts",
    "route_decision",
    "select_kernel",
    "unquantized_gemm",
]


def unquantized_gemm(layer: torch.nn.Module | None, x: torch.Tensor, weight: torch.Tensor,
                     bias: torch.Tensor | None = None) -> torch.Tensor:
    """vLLM's unquantized GEMM hook: counted per ``layer.prefix``, dispatched by the tuned table.

    Layers without a prefix (vLLM 0.13's ParallelLMHead keeps none) count under their class name.
    """
    name = getattr(layer, "prefix", None) or (type(layer).__name__ if layer is not None else "")
    return torch.ops.custom_kernels.linear(x, weight, bias, name)
