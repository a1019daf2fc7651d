"""Each Triton GEMM launcher against the fp32 reference, on odd shapes, bias and strided inputs.

CPU: Triton's interpreter, fp32/fp16 (bf16 is wrong in the interpreter), small N/K so the tier stays
fast. GPU tier: bf16/fp16 on the real kernels, including model-sized shapes.
"""

from __future__ import annotations

import pytest
import torch

from custom_kernels.gemm.reference import check_close, make_operands

# (M, N, K): M = 1, 3, 17, 333; K not a multiple of the block (100, 72 vs 32/64); odd N (33, 131).
CPU_CASES = [(1, 40, 72), (3, 33, 100), (17, 131, 72), (333, 24, 40)]
# Small tiles keep the interpreter's program count low; the GPU tier runs the default/tuned tiles.
CPU_CONFIGS = {
    "triton_tiled": {"BLOCK_M": 32, "BLOCK_N": 32, "BLOCK_K": 32, "GROUP_M": 4},
    "triton_splitk": {"BLOCK_M": 16, "BLOCK_N": 32, "BLOCK_K": 32, "SPLIT_K": 3},
    "triton_tma": {"BLOCK_M": 64, "BLOCK_N": 32, "BLOCK_K": 32, "GROUP_M": 4, "EPI_SUBTILE": True},
}
KERNELS = list(CPU_CONFIGS)


def _launcher(name):
    from custom_kernels.gemm.candidates import get_candidate

    return get_candidate(name).launch


def _strided(x: torch.Tensor) -> torch.Tensor:
    """Same values, row stride K+8 (a slice of a wider buffer): not contiguous."""
    wide = torch.zeros(x.shape[0], x.shape[1] + 8, dtype=x.dtype, device=x.device)
    wide[:, : x.shape[1]] = x
    return wide[:, : x.shape[1]]


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
@pytest.mark.parametrize(("m", "n", "k"), CPU_CASES, ids=[f"M{m}-N{n}-K{k}" for m, n, k in CPU_CASES])
def test_kernel_matches_reference_cpu(interpreter, kernel, dtype, m, n, k):
    bias = m % 2 == 1  # alternate bias / no bias across the cases
    x, w, b = make_operands(m, n, k, dtype, "cpu", bias=bias, seed=m + n + k)
    if m == 17:
        x = _strided(x)
        assert not x.is_contiguous()
    out = _launcher(kernel)(x, w, b, CPU_CONFIGS[kernel])
    assert out.shape == (m, n) and out.dtype == dtype
    check = check_close(out, x, w, b)
    assert check.ok, f"{kernel} {dtype} M={m}: max err {check.max_err:.3g} > bound {check.bound:.3g}"


def test_splitk_is_deterministic_and_reusable_cpu(interpreter):
    """The split-K counters reset themselves: a second launch (same buffers) gives identical results."""
    x, w, b = make_operands(5, 48, 200, torch.float16, "cpu", bias=True, seed=7)
    cfg = {"BLOCK_M": 16, "BLOCK_N": 16, "BLOCK_K": 32, "SPLIT_K": 4}
    first = _launcher("triton_splitk")(x, w, b, cfg)
    second = _launcher("triton_splitk")(x, w, b, cfg)
    assert torch.equal(first, second)
    from custom_kernels.gemm.launchers import _locks

    assert int(_locks(x.device).abs().sum()) == 0


def test_launcher_rejects_bad_shapes_with_the_fix():
    pytest.importorskip("triton")
    from custom_kernels.gemm.launchers import check_operands

    x, w, _ = make_operands(4, 8, 16, torch.float32)
    with pytest.raises(ValueError, match=r"pass the weight as \[out, in\]"):
        check_operands(x, w.t().contiguous(), None)
    with pytest.raises(ValueError, match="bias must be"):
        check_operands(x, w, torch.zeros(3))
    with pytest.raises(ValueError, match="share a dtype"):
        check_operands(x.half(), w, None)


# ------------------------------------------------------------------------------------------- GPU tier
GPU_CASES = [*CPU_CASES, (64, 4096, 4096), (1024, 1152, 896), (2048, 6144, 4096), (5, 151936, 896)]


@pytest.mark.gpu
@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize(("m", "n", "k"), GPU_CASES, ids=[f"M{m}-N{n}-K{k}" for m, n, k in GPU_CASES])
def test_kernel_matches_reference_gpu(kernel, dtype, m, n, k):
    bias = m % 2 == 1
    x, w, b = make_operands(m, n, k, dtype, "cuda", bias=bias, seed=m + n + k)
    if m in (17, 64):
        x = _strided(x)
    out = _launcher(kernel)(x, w, b, None)
    check = check_close(out, x, w, b)
    assert check.ok, f"{kernel} {dtype} M={m} N={n} K={k}: max err {check.max_err:.3g} > {check.bound:.3g}"


@pytest.mark.gpu
def test_every_tuning_config_is_correct_gpu():
    """Each config the tuner may pick computes the right result (M at the edges of the decode range)."""
    from custom_kernels.gemm.candidates import CANDIDATES

    for m, n, k in [(1, 1152, 896), (64, 896, 4864), (256, 2560, 2048)]:
        x, w, b = make_operands(m, n, k, torch.bfloat16, "cuda", bias=True, seed=m)
        for name in ("triton_splitk", "triton_tma"):
            for cfg in CANDIDATES[name].space(m, n, k, torch.cuda.get_device_properties(0).multi_processor_count):
                try:
                    out = CANDIDATES[name].launch(x, w, b, cfg)
                except Exception as err:
                    raise AssertionError(f"{name} {cfg} failed: {err}") from err
                check = check_close(out, x, w, b)
                assert check.ok, f"{name} {cfg} M={m}: {check.max_err:.3g} > {check.bound:.3g}"


@pytest.mark.gpu
def test_cublaslt_extension_builds_and_matches_gpu():
    from custom_kernels.cuda import cublaslt

    reason = cublaslt.unavailable_reason()
    if reason:
        pytest.skip(f"cuBLASLt extension can't build here: {reason}")
    for m, n, k, bias in [(1, 1152, 896, True), (17, 131, 72, False), (512, 4096, 4096, True)]:
        x, w, b = make_operands(m, n, k, torch.bfloat16, "cuda", bias=bias, seed=m)
        for algo in range(min(4, cublaslt.num_algos(x, w, bias))):
            check = check_close(cublaslt.gemm_cublaslt(x, w, b, {"algo": algo}), x, w, b)
            assert check.ok, f"cublaslt algo {algo} M={m}: {check.max_err:.3g} > {check.bound:.3g}"
    # strided rows go through cuBLASLt's leading dimension, no copy
    x, w, b = make_operands(9, 256, 128, torch.float16, "cuda", bias=True)
    assert check_close(cublaslt.gemm_cublaslt(_strided(x), w, b), x, w, b).ok
