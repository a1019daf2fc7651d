"""Reference and tolerance for y = x @ w.T + bias, shared by the tests and the benchmarks.

The tolerance follows flash-attention's rule: a kernel's error against an fp32 reference may be at
most ``factor`` times PyTorch's own same-dtype error (F.linear in the kernel's dtype) plus a small
absolute slack, so the bound tracks the dtype and the shape instead of a hand-picked constant.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


def reference_linear(x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """fp32 reference of F.linear (computed on x's device; fp64 on the CPU for exactness)."""
    acc = torch.float64 if x.device.type == "cpu" else torch.float32
    y = F.linear(x.to(acc), w.to(acc), None if bias is None else bias.to(acc))
    return y.float()


def torch_same_dtype(x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """PyTorch's own result in the kernel's dtype (on CPU fp16 via fp32 math, rounded once)."""
    if x.device.type == "cpu" and x.dtype != torch.float32:
        return F.linear(x.float(), w.float(), None if bias is None else bias.float()).to(x.dtype)
    return F.linear(x, w, bias)


@dataclass(frozen=True)
class Check:
    """Outcome of comparing a kernel's output with the reference."""

    max_err: float
    torch_err: float
    bound: float

    @property
    def ok(self) -> bool:
        return self.max_err <= self.bound


def check_close(out: torch.Tensor, x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor | None = None,
                factor: float = 2.0, atol: float | None = None,
                ref: tuple[torch.Tensor, float] | None = None) -> Check:
    """Max abs error of ``out`` vs the fp32 reference, bounded by factor x PyTorch's error + atol.

    ``ref`` = (reference, PyTorch's error) from ``reference_and_error`` saves recomputing them.
    """
    ref_out, torch_err = ref if ref is not None else reference_and_error(x, w, bias)
    if out.shape != ref_out.shape:
        raise AssertionError(f"shape {tuple(out.shape)} != reference {tuple(ref_out.shape)}")
    if not torch.isfinite(out).all():
        return Check(float("inf"), torch_err, 0.0)
    ref = ref_out
    if atol is None:  # one unit in the last place of the output's typical magnitude
        atol = {torch.float32: 1e-5, torch.float16: 1e-3, torch.bfloat16: 8e-3}[x.dtype] * max(
            1.0, ref.abs().mean().item())
    max_err = (out.float() - ref).abs().max().item()
    return Check(max_err, torch_err, factor * torch_err + atol)


def reference_and_error(x: torch.Tensor, w: torch.Tensor,
                        bias: torch.Tensor | None = None) -> tuple[torch.Tensor, float]:
    """The fp32 reference and PyTorch's own same-dtype max abs error against it."""
    ref = reference_linear(x, w, bias)
    return ref, (torch_same_dtype(x, w, bias).float() - ref).abs().max().item()


def make_operands(m: int, n: int, k: int, dtype: torch.dtype, device: str | torch.device = "cpu",
                  bias: bool = False, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Random operands scaled like a real layer (unit-variance activations, 1/sqrt(K) weights)."""
    device = torch.device(device)
    gen = torch.Generator(device=device).manual_seed(seed)
    x = torch.randn(m, k, generator=gen, device=device).to(dtype)
    w = (torch.randn(n, k, generator=gen, device=device) / k**0.5).to(dtype)
    b = torch.randn(n, generator=gen, device=device).to(dtype) if bias else None
    return x, w, b
