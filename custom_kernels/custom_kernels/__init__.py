"""Custom GEMM kernels for vLLM's unquantized linear layers.

The contract with vLLM (the patch series and the plugin route both call it):
``unquantized_gemm(layer, x, weight, bias=None)`` computes ``x @ weight.T + bias`` for a weight of
shape [N, K] and any leading dims of ``x``, exactly like ``torch.nn.functional.linear``.
"""

from __future__ import annotations

import torch

__version__ = "0.1.0"

# Per-layer call counts ("did my kernel run?"): layer prefix (or "<unnamed>") -> calls.
CALL_COUNTS: dict[str, int] = {}


def unquantized_gemm(layer: torch.nn.Module | None, x: torch.Tensor, weight: torch.Tensor,
                     bias: torch.Tensor | None = None) -> torch.Tensor:
    """vLLM's unquantized GEMM hook signature. Placeholder body until the kernels land: F.linear."""
    name = getattr(layer, "prefix", None) or "<unnamed>"
    CALL_COUNTS[name] = CALL_COUNTS.get(name, 0) + 1
    return torch.nn.functional.linear(x, weight, bias)
