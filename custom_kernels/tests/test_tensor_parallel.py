"""The op inside torch.distributed (custom_kernels/tensor_parallel.py): column- and row-parallel linears over two
ranks, each rank's GEMM through torch.ops.custom_kernels.linear, equal to the whole GEMM within the tolerance
rule (gemm/reference.py).

CPU (gloo): two real processes in a real process group; the op's CPU path (F.linear) and a forced Triton kernel
in the interpreter. What that proves is the split itself: each rank's slice of the weight, the bias on rank 0
only for a row-parallel layer, the all-gather order and the all-reduce sum. gpu tier (NCCL, two GPUs): the
same at Llama-3-8B's TP=2 shapes in bf16, the table's dispatch and the forced split-K kernel on CUDA.
"""

from __future__ import annotations

import pytest
import torch

from custom_kernels.tensor_parallel import Case, model_cases, run_ranks


def _assert_all_ok(results: list[dict], world: int, cases: list[Case], kernels: list) -> None:
    assert len(results) == world * len(cases) * len(kernels)  # every rank answered every case
    bad = [r for r in results if not r["ok"]]
    assert not bad, bad[:3]
    assert all(r["one_device_ok"] for r in results)


def test_column_and_row_parallel_over_two_gloo_ranks():
    cases = [Case(kind, m, n, k, bias, dtype) for kind in ("column", "row") for (m, n, k) in ((6, 84, 124), (1, 32, 64))
             for bias in (False, True) for dtype in ("float32", "bfloat16")]
    results = run_ranks(2, "gloo", cases, [None])
    _assert_all_ok(results, 2, cases, [None])
    assert {r["kernels_run"].get("cublas") for r in results} == {1}  # the op ran in every rank (its CPU path)
    # both ranks end with the whole output: the gathered/reduced result is the same everywhere
    by_case = {}
    for r in results:
        by_case.setdefault((r["kind"], r["m"], r["n"], r["k"], r["bias"], r["dtype"]), set()).add(r["max_err"])
    assert all(len(errs) == 1 for errs in by_case.values())


def test_forced_triton_kernel_inside_the_group(interpreter):
    cases = [Case("column", 3, 64, 48, True, "float32"), Case("row", 3, 32, 96, True, "float32")]
    results = run_ranks(2, "gloo", cases, ["triton_splitk"])
    _assert_all_ok(results, 2, cases, ["triton_splitk"])
    assert all(r["kernels_run"] == {"triton_splitk": 1} for r in results)


def test_model_cases_are_the_whole_linears_of_the_tp_shapes():
    cases = model_cases("llama-3-8b", 2, (16,))
    assert {(c.kind, c.n, c.k) for c in cases} == {("column", 6144, 4096), ("row", 4096, 4096),
                                                  ("column", 28672, 4096), ("row", 4096, 14336)}


@pytest.mark.gpu
def test_column_and_row_parallel_over_two_nccl_ranks():
    if torch.cuda.device_count() < 2:
        pytest.skip(f"needs 2 CUDA devices, {torch.cuda.device_count()} visible (the 2-GPU host runs it)")
    cases = model_cases("llama-3-8b", 2, (1, 16, 256))
    kernels = [None, "triton_splitk"]
    results = run_ranks(2, "nccl", cases, kernels)
    _assert_all_ok(results, 2, cases, kernels)
    assert all(r["kernels_run"] == {"triton_splitk": 1} for r in results if r["kernel"] == "triton_splitk")
