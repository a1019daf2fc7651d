"""Triton GEMM kernels for y = x @ w.T (+ bias), w of shape [N, K] (vLLM's weight layout).

Three kernels, one family:
- ``_gemm_tma_persistent``: prefill. One program per SM loops over output tiles (grouped order for
  L2 reuse); A and B come through host-built TMA descriptors, the epilogue stores through TMA when
  the output row is 16-byte aligned. Needs K * itemsize % 16 == 0 (TMA stride rule).
- ``_gemm_splitk``: decode (M <= 64). Small BLOCK_M, many programs along N and K so the weight
  streams from HBM on every SM; split-K partials go to an fp32 workspace and the last program of a
  tile (a per-tile counter, reset by that program) sums them in a fixed order: deterministic, one
  launch, CUDA-graph safe.
- ``_gemm_tiled``: the generic pointer kernel (any strides, any K): fallback where TMA can't be used.

Importing this module needs Triton; set TRITON_INTERPRET=1 before importing it to run on the CPU.
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def _grouped_pid(tile_id, num_pid_m, num_pid_n, GROUP_M: tl.constexpr):
    """Grouped ("super-tile") order: GROUP_M row-tiles share each weight column-tile in L2."""
    num_pid_in_group = GROUP_M * num_pid_n
    group_id = tile_id // num_pid_in_group
    first_pid_m = group_id * GROUP_M
    group_size_m = min(num_pid_m - first_pid_m, GROUP_M)
    pid_m = first_pid_m + (tile_id % group_size_m)
    pid_n = (tile_id % num_pid_in_group) // group_size_m
    return pid_m, pid_n


@triton.jit
def _store_tile(acc, y_ptr, b_ptr, offs_m, offs_n, M, N, stride_ym, stride_yn, HAS_BIAS: tl.constexpr):
    """Masked epilogue: add bias in fp32 (as cuBLAS's bias epilogue does), round once, store."""
    if HAS_BIAS:
        bias = tl.load(b_ptr + offs_n, mask=offs_n < N, other=0.0).to(tl.float32)
        acc = acc + bias[None, :]
    ptrs = y_ptr + offs_m[:, None].to(tl.int64) * stride_ym + offs_n[None, :] * stride_yn
    mask = (offs_m[:, None] < M) & (offs_n[None, :] < N)
    tl.store(ptrs, acc.to(y_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _gemm_tiled(x_ptr, w_ptr, b_ptr, y_ptr, M, N, K,
                stride_xm, stride_xk, stride_wn, stride_wk, stride_ym, stride_yn,
                HAS_BIAS: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr, DOT_PRECISION: tl.constexpr):
    pid_m, pid_n = _grouped_pid(tl.program_id(0), tl.cdiv(M, BLOCK_M), tl.cdiv(N, BLOCK_N), GROUP_M)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_k = tl.arange(0, BLOCK_K)
    x_ptrs = x_ptr + offs_m[:, None].to(tl.int64) * stride_xm + offs_k[None, :] * stride_xk
    w_ptrs = w_ptr + offs_n[:, None].to(tl.int64) * stride_wn + offs_k[None, :] * stride_wk
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k in range(0, tl.cdiv(K, BLOCK_K)):
        k_left = K - k * BLOCK_K
        x = tl.load(x_ptrs, mask=(offs_m[:, None] < M) & (offs_k[None, :] < k_left), other=0.0)
        w = tl.load(w_ptrs, mask=(offs_n[:, None] < N) & (offs_k[None, :] < k_left), other=0.0)
        acc = tl.dot(x, tl.trans(w), acc, input_precision=DOT_PRECISION)
        x_ptrs += BLOCK_K * stride_xk
        w_ptrs += BLOCK_K * stride_wk
    _store_tile(acc, y_ptr, b_ptr, offs_m, offs_n, M, N, stride_ym, stride_yn, HAS_BIAS)


@triton.jit
def _gemm_splitk(x_ptr, w_ptr, b_ptr, y_ptr, ws_ptr, lock_ptr, M, N, K, K_PER_SPLIT, SPLIT_K,
                 stride_xm, stride_xk, stride_wn, stride_wk, stride_ym, stride_yn,
                 HAS_BIAS: tl.constexpr, USE_SPLIT: tl.constexpr, BLOCK_M: tl.constexpr,
                 BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, DOT_PRECISION: tl.constexpr):
    pid_n = tl.program_id(0)
    pid_s = tl.program_id(1)
    pid_m = tl.program_id(2)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_k = pid_s * K_PER_SPLIT + tl.arange(0, BLOCK_K)
    x_ptrs = x_ptr + offs_m[:, None].to(tl.int64) * stride_xm + offs_k[None, :] * stride_xk
    w_ptrs = w_ptr + offs_n[:, None].to(tl.int64) * stride_wn + offs_k[None, :] * stride_wk
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k in range(0, K_PER_SPLIT, BLOCK_K):
        k_ok = (offs_k[None, :] + k) < K
        x = tl.load(x_ptrs, mask=(offs_m[:, None] < M) & k_ok, other=0.0)
        w = tl.load(w_ptrs, mask=(offs_n[:, None] < N) & k_ok, other=0.0)
        acc = tl.dot(x, tl.trans(w), acc, input_precision=DOT_PRECISION)
        x_ptrs += BLOCK_K * stride_xk
        w_ptrs += BLOCK_K * stride_wk
    if USE_SPLIT:
        mask = (offs_m[:, None] < M) & (offs_n[None, :] < N)
        tile_offs = offs_m[:, None].to(tl.int64) * N + offs_n[None, :]
        tl.store(ws_ptr + pid_s.to(tl.int64) * M * N + tile_offs, acc, mask=mask)
        # Every thread's partial must be stored before the counter says "done" (release);
        # the last program to arrive reads all partials through L2 (.cg) and resets the counter.
        tl.debug_barrier()
        tile = pid_m * tl.num_programs(0) + pid_n
        arrived = tl.atomic_add(lock_ptr + tile, 1, sem="acq_rel", scope="gpu")
        if arrived == SPLIT_K - 1:
            total = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
            for s in range(0, SPLIT_K):
                total += tl.load(ws_ptr + s * M * N + tile_offs, mask=mask, other=0.0, cache_modifier=".cg")
            _store_tile(total, y_ptr, b_ptr, offs_m, offs_n, M, N, stride_ym, stride_yn, HAS_BIAS)
            tl.atomic_xchg(lock_ptr + tile, 0, sem="relaxed", scope="gpu")
    else:
        _store_tile(acc, y_ptr, b_ptr, offs_m, offs_n, M, N, stride_ym, stride_yn, HAS_BIAS)


@triton.jit
def _gemm_tma_persistent(a_desc, b_desc, c_desc, y_ptr, b_ptr, M, N, K, stride_ym,
                         HAS_BIAS: tl.constexpr, C_TMA: tl.constexpr, BLOCK_M: tl.constexpr,
                         BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
                         NUM_SMS: tl.constexpr, EPI_SUBTILE: tl.constexpr, FLATTEN: tl.constexpr,
                         WARP_SPEC: tl.constexpr, DOT_PRECISION: tl.constexpr):
    start_pid = tl.program_id(0)
    num_pid_m = tl.cdiv(M, BLOCK_M)
    num_pid_n = tl.cdiv(N, BLOCK_N)
    k_tiles = tl.cdiv(K, BLOCK_K)
    num_tiles = num_pid_m * num_pid_n
    for tile_id in tl.range(start_pid, num_tiles, NUM_SMS, flatten=FLATTEN, warp_specialize=WARP_SPEC):
        pid_m, pid_n = _grouped_pid(tile_id, num_pid_m, num_pid_n, GROUP_M)
        off_m = pid_m * BLOCK_M
        off_n = pid_n * BLOCK_N
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        for ki in range(k_tiles):
            a = a_desc.load([off_m, ki * BLOCK_K])
            b = b_desc.load([off_n, ki * BLOCK_K])
            acc = tl.dot(a, b.T, acc, input_precision=DOT_PRECISION)
        offs_n = off_n + tl.arange(0, BLOCK_N)
        if C_TMA:
            if HAS_BIAS:
                acc = acc + tl.load(b_ptr + offs_n, mask=offs_n < N, other=0.0).to(tl.float32)[None, :]
            if EPI_SUBTILE:
                # Two half-width stores: half the epilogue registers/shared memory (tutorial 09's trick).
                acc = tl.permute(tl.reshape(acc, (BLOCK_M, 2, BLOCK_N // 2)), (0, 2, 1))
                c0, c1 = tl.split(acc)
                c_desc.store([off_m, off_n], c0.to(y_ptr.dtype.element_ty))
                c_desc.store([off_m, off_n + BLOCK_N // 2], c1.to(y_ptr.dtype.element_ty))
            else:
                c_desc.store([off_m, off_n], acc.to(y_ptr.dtype.element_ty))
        else:
            offs_m = off_m + tl.arange(0, BLOCK_M)
            _store_tile(acc, y_ptr, b_ptr, offs_m, offs_n, M, N, stride_ym, 1, HAS_BIAS)
