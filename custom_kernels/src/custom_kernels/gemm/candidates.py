"""The candidates the dispatcher chooses among, with their tuning spaces.

A candidate is a launcher ``(x2d, w, bias, config) -> y`` plus the configs the tuner tries for an
(M, N, K) problem and the substring its kernels carry in a profiler trace. ``cublas`` (F.linear) is
the baseline every other candidate is measured against and the fallback for untuned shapes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

Config = dict[str, Any]
Launcher = Callable[[torch.Tensor, torch.Tensor, "torch.Tensor | None", "Config | None"], torch.Tensor]

DECODE_MAX_M = 64  # split-K tiles cover M <= 64; the persistent TMA kernel covers M >= 64
_SMEM_BYTES = 225 * 1024  # Hopper: 227 KB of shared memory per block, minus Triton's barriers


def _cublas(x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor | None = None, config: Config | None = None):
    return F.linear(x, w, bias)


def _splitk(x, w, bias=None, config=None):
    from .launchers import gemm_splitk

    return gemm_splitk(x, w, bias, config)


def _tma(x, w, bias=None, config=None):
    from .launchers import gemm_tma_persistent

    return gemm_tma_persistent(x, w, bias, config)


def _tiled(x, w, bias=None, config=None):
    from .launchers import gemm_tiled

    return gemm_tiled(x, w, bias, config)


def _cublaslt(x, w, bias=None, config=None):
    from ..cuda.cublaslt import gemm_cublaslt

    return gemm_cublaslt(x, w, bias, config)


def _pow2_at_least(v: int, lo: int, hi: int) -> int:
    return min(hi, max(lo, 1 << max(0, (v - 1).bit_length())))


# Split-K for mid M (64 < M <= 2048) where the output has fewer 128x128 tiles than SMs (down_proj,
# o_proj: N <= 4096 with K up to 14336): without a split, most SMs idle (Triton TMA at 0.43-0.67x
# cuBLAS at M=128 on an H200 for those shapes). (BM, BN, BK, warps, stages).
_MID_SPLIT_TILES = [(64, 128, 64, 4, 4), (128, 128, 64, 8, 3), (64, 64, 128, 4, 4), (128, 64, 64, 4, 4)]
MID_SPLIT_MAX_M = 2048


def _mid_splitk_space(m: int, n: int, k: int, num_sms: int) -> list[Config]:
    if m > MID_SPLIT_MAX_M or -(-m // 128) * -(-n // 128) >= num_sms:
        return []
    space = []
    for bm, bn, bk, warps, stages in _MID_SPLIT_TILES:
        tiles = -(-m // bm) * -(-n // bn)
        k_blocks = -(-k // bk)
        auto = max(1, min(16, -(-num_sms // tiles), k_blocks // 2))
        for s in sorted({auto, min(16, 2 * auto, max(1, k_blocks // 2))}):
            if s > 1:
                space.append({"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk, "SPLIT_K": s, "num_warps": warps,
                              "num_stages": stages})
    return space


def splitk_space(m: int, n: int, k: int, num_sms: int = 132) -> list[Config]:
    """Decode tiles: BLOCK_M just covers M; BLOCK_N/K and the split factor around ~2 programs per SM.

    Above M=64 only the mid-M split-K tiles (few output tiles, long K) are offered.
    """
    if m > DECODE_MAX_M:
        return _mid_splitk_space(m, n, k, num_sms)
    bm = _pow2_at_least(m, 16, 64)
    space = []
    for bn in (32, 64, 128):
        for bk in (128, 256):
            k_blocks = -(-k // bk)
            tiles = -(-n // bn) * -(-m // bm)
            auto = max(1, min(16, -(-2 * num_sms // tiles), k_blocks))
            splits = sorted({s for s in (1, auto // 2, auto, auto * 2) if 1 <= s <= min(16, k_blocks)})
            stages = 4 if bk == 128 else 3
            if (bm + bn) * bk * 2 * stages > _SMEM_BYTES:  # e.g. 64x128x256x3 needs 288 KB: won't compile
                continue
            for s in splits:
                space.append({"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk, "SPLIT_K": s, "num_warps": 4,
                              "num_stages": stages})
    return space


# Persistent TMA tiles (BM, BN, BK, warps, stages): 128x256x64/8 warps/3 stages is tutorial 09's
# Hopper config and wins on the Llama-3-8B shapes (0.98-1.03x cuBLAS on an H200); the narrow tiles
# serve small problems (Qwen2.5-0.5B, N or M <= 1152) where 128x256 leaves most SMs idle.
# Warp specialization (tl.range(warp_specialize=True)) compiled on triton 3.6 but never won (0.5-1%
# slower at M >= 1024, 2x slower on small problems): left out of the space, the flag stays.
_TMA_TILES = [
    (128, 256, 64, 8, 3),
    (128, 256, 64, 8, 4),
    (256, 128, 64, 8, 3),
    (128, 128, 64, 8, 4),
    (128, 128, 128, 8, 3),
    (128, 64, 64, 4, 4),
    (64, 128, 64, 4, 4),
    (64, 128, 128, 4, 3),
    (64, 256, 64, 4, 4),
    (64, 64, 64, 4, 4),
]


def tma_space(m: int, n: int, k: int, num_sms: int = 132) -> list[Config]:
    """Prefill tiles for M >= 64 (BLOCK_M <= M)."""
    if m < DECODE_MAX_M:
        return []
    return [{"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk, "GROUP_M": 8, "num_warps": warps, "num_stages": stages,
             "EPI_SUBTILE": bn >= 128, "FLATTEN": True, "WARP_SPEC": False}
            for bm, bn, bk, warps, stages in _TMA_TILES if bm <= m]


def cublaslt_space(m: int, n: int, k: int, num_sms: int = 132, algos: int = 4) -> list[Config]:
    """The first few of cuBLASLt's ranked algorithms (index 0 is what the heuristic would pick)."""
    return [{"algo": i} for i in range(algos)]


@dataclass(frozen=True)
class Candidate:
    """A GEMM implementation the dispatcher can pick."""

    name: str
    launch: Launcher
    space: Callable[..., list[Config]]
    trace_name: str  # substring of its GPU kernels' names in a profiler trace ("" = not identifiable)
    triton: bool = False


CANDIDATES: dict[str, Candidate] = {
    c.name: c
    for c in (
        Candidate("cublas", _cublas, lambda m, n, k, num_sms=132: [{}], ""),
        Candidate("triton_splitk", _splitk, splitk_space, "_gemm_splitk", triton=True),
        Candidate("triton_tma", _tma, tma_space, "_gemm_tma_persistent", triton=True),
        Candidate("triton_tiled", _tiled, lambda m, n, k, num_sms=132: [], "_gemm_tiled", triton=True),
        Candidate("cublaslt", _cublaslt, cublaslt_space, ""),
    )
}


def get_candidate(name: str) -> Candidate:
    """Look a candidate up by name; the error lists the valid names."""
    try:
        return CANDIDATES[name]
    except KeyError:
        raise ValueError(f"unknown GEMM kernel {name!r}; choose one of {', '.join(CANDIDATES)}") from None
