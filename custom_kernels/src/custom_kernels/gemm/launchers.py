"""Launchers for the Triton GEMMs: check shapes, pick a config, allocate the output, launch.

Each launcher computes ``x @ w.T + bias`` for a 2-D ``x`` [M, K] and ``w`` [N, K] (any strides)
and returns a new contiguous [M, N] tensor of x's dtype. Configs are plain dicts (what the tuned
table stores); ``None`` picks a heuristic default.
"""

from __future__ import annotations

import functools
from typing import Any

import torch
import triton

Config = dict[str, Any]
SUPPORTED_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
# Split-K tile counters: one int32 per output tile, zero between launches (the kernel resets them).
_LOCK_SLOTS = 1 << 16


def check_operands(x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor | None) -> tuple[int, int, int]:
    """Validate a 2-D GEMM's operands; return (M, N, K). Raises ValueError naming the fix."""
    if x.dim() != 2 or w.dim() != 2:
        raise ValueError(f"expected x [M, K] and weight [N, K], got {tuple(x.shape)} and {tuple(w.shape)}")
    (m, k), (n, k_w) = x.shape, w.shape
    if k != k_w:
        raise ValueError(f"x has K={k} but weight [N, K] has K={k_w}: pass the weight as [out, in]")
    if x.dtype != w.dtype or x.dtype not in SUPPORTED_DTYPES:
        raise ValueError(f"x and weight must share a dtype among {SUPPORTED_DTYPES}, got {x.dtype}, {w.dtype}")
    if x.device != w.device:
        raise ValueError(f"x is on {x.device} but weight on {w.device}")
    if bias is not None and (bias.shape != (n,) or bias.dtype != x.dtype or bias.device != x.device):
        raise ValueError(f"bias must be [{n}] of {x.dtype} on {x.device}, got {tuple(bias.shape)} {bias.dtype}")
    return m, n, k


def _dot_precision(dtype: torch.dtype) -> str:
    # fp32 stays exact (no tf32) so the fp32 path matches F.linear's fp32 result.
    return "ieee" if dtype == torch.float32 else "tf32"


@functools.cache
def _num_sms(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).multi_processor_count
    return 4  # the CPU interpreter: a few "SMs" keep the persistent loop honest and the test fast


_LOCKS: dict[torch.device, torch.Tensor] = {}


def _locks(device: torch.device) -> torch.Tensor:
    lock = _LOCKS.get(device)
    if lock is None:
        lock = _LOCKS[device] = torch.zeros(_LOCK_SLOTS, dtype=torch.int32, device=device)
    return lock


def _next_pow2(v: int) -> int:
    return 1 << max(0, (v - 1).bit_length())


# ---------------------------------------------------------------------------- tiled (generic)
def default_tiled_config(m: int, n: int, k: int) -> Config:
    """Tutorial-03-like tiles; small M gets a small BLOCK_M so fewer rows are padded."""
    bm = min(128, max(16, _next_pow2(m)))
    return {"BLOCK_M": bm, "BLOCK_N": 128, "BLOCK_K": 64, "GROUP_M": 8, "num_warps": 4 if bm <= 64 else 8,
            "num_stages": 3}


def gemm_tiled(x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor | None = None,
               config: Config | None = None) -> torch.Tensor:
    """Generic Triton GEMM (any strides, any K)."""
    from . import triton_kernels as K_

    m, n, k = check_operands(x, w, bias)
    cfg = {**default_tiled_config(m, n, k), **(config or {})}
    y = torch.empty((m, n), dtype=x.dtype, device=x.device)
    grid = (triton.cdiv(m, cfg["BLOCK_M"]) * triton.cdiv(n, cfg["BLOCK_N"]),)
    K_._gemm_tiled[grid](
        x, w, bias if bias is not None else y, y, m, n, k,
        x.stride(0), x.stride(1), w.stride(0), w.stride(1), y.stride(0), y.stride(1),
        HAS_BIAS=bias is not None, BLOCK_M=cfg["BLOCK_M"], BLOCK_N=cfg["BLOCK_N"], BLOCK_K=cfg["BLOCK_K"],
        GROUP_M=cfg["GROUP_M"], DOT_PRECISION=_dot_precision(x.dtype),
        num_warps=cfg["num_warps"], num_stages=cfg["num_stages"])
    return y


# ---------------------------------------------------------------------------- split-K (decode)
def default_splitk_config(m: int, n: int, k: int, num_sms: int = 132) -> Config:
    """Enough programs (about 2 per SM) to keep every SM streaming weight bytes."""
    bm, bn, bk = min(64, max(16, _next_pow2(m))), 64, 128
    tiles = triton.cdiv(n, bn) * triton.cdiv(m, bm)
    split = max(1, min(16, triton.cdiv(2 * num_sms, tiles), triton.cdiv(k, bk)))
    return {"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk, "SPLIT_K": split, "num_warps": 4, "num_stages": 4}


def gemm_splitk(x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor | None = None,
                config: Config | None = None) -> torch.Tensor:
    """Small-M GEMM that streams the weight: split-K with an in-kernel, fixed-order reduction."""
    from . import triton_kernels as K_

    m, n, k = check_operands(x, w, bias)
    cfg = {**default_splitk_config(m, n, k, _num_sms(x.device)), **(config or {})}
    bm, bn, bk = cfg["BLOCK_M"], cfg["BLOCK_N"], cfg["BLOCK_K"]
    k_blocks = triton.cdiv(k, bk)
    split = max(1, min(int(cfg["SPLIT_K"]), k_blocks))
    k_per_split = triton.cdiv(k_blocks, split) * bk
    split = triton.cdiv(k, k_per_split)  # no empty splits
    tiles_n, tiles_m = triton.cdiv(n, bn), triton.cdiv(m, bm)
    if tiles_n * tiles_m > _LOCK_SLOTS:  # more tiles than counters: no split (never hit by model shapes)
        split, k_per_split = 1, k_blocks * bk
    y = torch.empty((m, n), dtype=x.dtype, device=x.device)
    use_split = split > 1
    ws = torch.empty((split, m, n), dtype=torch.float32, device=x.device) if use_split else y
    locks = _locks(x.device) if use_split else y
    K_._gemm_splitk[(tiles_n, split, tiles_m)](
        x, w, bias if bias is not None else y, y, ws, locks, m, n, k, k_per_split, split,
        x.stride(0), x.stride(1), w.stride(0), w.stride(1), y.stride(0), y.stride(1),
        HAS_BIAS=bias is not None, USE_SPLIT=use_split, BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk,
        DOT_PRECISION=_dot_precision(x.dtype), num_warps=cfg["num_warps"], num_stages=cfg["num_stages"])
    return y


# ---------------------------------------------------------------------------- TMA persistent (prefill)
def default_tma_config(m: int, n: int, k: int) -> Config:
    """128x256x64, 3 stages, 8 warps: tutorial 09's Hopper choice for bf16 (tune refines it)."""
    return {"BLOCK_M": 128, "BLOCK_N": 256, "BLOCK_K": 64, "GROUP_M": 8, "num_warps": 8, "num_stages": 3,
            "EPI_SUBTILE": True, "FLATTEN": True, "WARP_SPEC": False}


def tma_compatible(x: torch.Tensor, w: torch.Tensor) -> bool:
    """TMA needs a unit inner stride, 16-byte aligned base pointers and 16-byte aligned row strides."""
    size = x.element_size()
    return all(not (t.stride(1) != 1 or t.stride(0) * size % 16 or t.data_ptr() % 16) for t in (x, w))


def gemm_tma_persistent(x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor | None = None,
                        config: Config | None = None) -> torch.Tensor:
    """Persistent TMA GEMM for large M; falls back to the tiled kernel where TMA's stride rules fail."""
    from triton.tools.tensor_descriptor import TensorDescriptor

    from . import triton_kernels as K_

    m, n, k = check_operands(x, w, bias)
    cfg = {**default_tma_config(m, n, k), **(config or {})}
    if not tma_compatible(x, w):
        xc, wc = x.contiguous(), w.contiguous()  # a copy fixes strides and alignment, not an odd K
        if not tma_compatible(xc, wc):
            return gemm_tiled(x, w, bias, {key: cfg[key] for key in ("BLOCK_M", "BLOCK_N", "BLOCK_K", "GROUP_M")})
        x, w = xc, wc
    bm, bn, bk = cfg["BLOCK_M"], cfg["BLOCK_N"], cfg["BLOCK_K"]
    y = torch.empty((m, n), dtype=x.dtype, device=x.device)
    c_tma = (n * y.element_size()) % 16 == 0
    subtile = bool(cfg["EPI_SUBTILE"])
    a_desc = TensorDescriptor(x, [m, k], [x.stride(0), 1], [bm, bk])
    b_desc = TensorDescriptor(w, [n, k], [w.stride(0), 1], [bn, bk])
    c_desc = TensorDescriptor(y, [m, n], [n, 1], [bm, bn // 2 if subtile else bn]) if c_tma else None
    num_sms = _num_sms(x.device)
    grid = (min(num_sms, triton.cdiv(m, bm) * triton.cdiv(n, bn)),)
    K_._gemm_tma_persistent[grid](
        a_desc, b_desc, c_desc, y, bias if bias is not None else y, m, n, k, y.stride(0),
        HAS_BIAS=bias is not None, C_TMA=c_tma, BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk, GROUP_M=cfg["GROUP_M"],
        NUM_SMS=num_sms, EPI_SUBTILE=subtile, FLATTEN=bool(cfg["FLATTEN"]), WARP_SPEC=bool(cfg["WARP_SPEC"]),
        DOT_PRECISION=_dot_precision(x.dtype), num_warps=cfg["num_warps"], num_stages=cfg["num_stages"])
    return y
