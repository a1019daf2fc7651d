"""The contract: custom_kernels.unquantized_gemm / torch.ops.custom_kernels.linear.

CPU: F.linear fallback (exact), forced Triton kernels through the interpreter, 3-D and strided
inputs, bias, fp32, per-layer counters, opcheck (schema + fake impl) and a fullgraph Dynamo trace.
GPU tier: the same in bf16/fp16, torch.compile(fullgraph=True) with inductor, CUDA-graph capture and
replay with the kernel names confirmed from a profiler trace, and device-side counters.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import custom_kernels as ck
from custom_kernels.gemm.reference import check_close, make_operands


class Layer(torch.nn.Module):
    def __init__(self, prefix: str):
        super().__init__()
        self.prefix = prefix


@pytest.fixture(autouse=True)
def _clean_counts():
    ck.reset_counts()
    yield
    ck.reset_counts()


def test_cpu_fallback_is_f_linear_for_any_leading_dims():
    x, w, b = make_operands(6, 24, 40, torch.float32, bias=True)
    x3 = x.view(2, 3, 40)
    out = ck.unquantized_gemm(Layer("model.layers.0.mlp.down_proj"), x3, w, b)
    assert out.shape == (2, 3, 24)
    assert torch.equal(out, F.linear(x3, w, b))
    assert ck.CALL_COUNTS == {"model.layers.0.mlp.down_proj": 1}
    assert ck.KERNEL_COUNTS["model.layers.0.mlp.down_proj"] == {"cublas": 1}


def test_unnamed_layer_and_none_layer_are_counted():
    x, w, _ = make_operands(2, 8, 16, torch.float32)
    ck.unquantized_gemm(None, x, w)
    ck.unquantized_gemm(torch.nn.Linear(16, 8), x, w)  # no prefix (like vLLM's ParallelLMHead): class name
    assert ck.CALL_COUNTS == {"<unnamed>": 1, "Linear": 1}


@pytest.mark.parametrize("kernel", ["triton_tiled", "triton_splitk", "triton_tma"])
def test_forced_kernel_runs_in_interpreter_with_3d_strided_bias(interpreter, kernel):
    x, w, b = make_operands(6, 33, 72, torch.float16, bias=True, seed=3)
    x3 = torch.zeros(2, 3, 80, dtype=torch.float16)[..., :72]  # strided 3-D view
    x3.copy_(x.view(2, 3, 72))
    with ck.force_kernel(kernel, {"BLOCK_M": 16, "BLOCK_N": 32, "BLOCK_K": 32}):
        out = ck.unquantized_gemm(Layer("l0"), x3, w, b)
    assert out.shape == (2, 3, 33)
    assert check_close(out.reshape(6, 33), x, w, b).ok
    assert ck.KERNEL_COUNTS["l0"] == {kernel: 1}


def test_force_kernel_rejects_unknown_names():
    with pytest.raises(ValueError, match="choose one of"), ck.force_kernel("nope"):
        pass


def test_fp32_goes_to_f_linear_unless_forced():
    x, w, b = make_operands(3, 16, 32, torch.float32, bias=True)
    assert ck.select_kernel(x, w, b).kernel == "cublas"


def test_opcheck_schema_and_fake_impl():
    x, w, b = make_operands(5, 24, 40, torch.float32, bias=True)
    torch.library.opcheck(torch.ops.custom_kernels.linear.default, (x.view(5, 1, 40), w, b, "l"))
    torch.library.opcheck(torch.ops.custom_kernels.linear.default, (x, w, None, ""))


def test_dynamo_traces_fullgraph_without_breaks():
    x, w, b = make_operands(4, 24, 40, torch.float32, bias=True)
    layer = Layer("model.layers.3.self_attn.qkv_proj")
    fn = torch.compile(lambda t: ck.unquantized_gemm(layer, t, w, b), fullgraph=True, backend="eager")
    assert torch.equal(fn(x), F.linear(x, w, b))
    assert ck.CALL_COUNTS[layer.prefix] == 1  # counted inside the op: runs from the compiled graph too


# ------------------------------------------------------------------------------------------- GPU tier
def _gpu_table(tmp_path, monkeypatch, kernel: str, config: dict, n: int, k: int, m: int) -> None:
    """A one-entry dispatch table for this GPU so the *table* path (not force) picks ``kernel``."""
    from custom_kernels import dispatch

    table = dispatch.DispatchTable()
    table.set_entries(torch.cuda.get_device_name(0), "bfloat16",
                      {dispatch.shape_key(n, k): {str(dispatch.bucket_for(m)): {"kernel": kernel, "config": config}}},
                      {})
    path = dispatch.write_table(table, tmp_path / "table.json")
    monkeypatch.setenv("CUSTOM_KERNELS_TABLE", str(path))
    dispatch.reload_table()


@pytest.fixture
def restore_table():
    yield
    from custom_kernels import dispatch

    dispatch.reload_table()


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("kernel", ["triton_splitk", "triton_tma", "cublas"])
def test_op_gpu_3d_strided_bias(kernel, dtype):
    x, w, b = make_operands(34, 1152, 896, dtype, "cuda", bias=True)
    wide = torch.zeros(2, 17, 904, dtype=dtype, device="cuda")
    x3 = wide[..., :896]
    x3.copy_(x.view(2, 17, 896))
    with ck.force_kernel(kernel):
        out = ck.unquantized_gemm(Layer("l"), x3, w, b)
    assert out.shape == (2, 17, 1152)
    check = check_close(out.reshape(34, 1152), x, w, b)
    assert check.ok, f"{check.max_err:.3g} > {check.bound:.3g}"


@pytest.mark.gpu
def test_compile_fullgraph_inductor_uses_the_table_kernel(tmp_path, monkeypatch, restore_table):
    _gpu_table(tmp_path, monkeypatch, "triton_splitk", {"BLOCK_N": 64, "BLOCK_K": 128, "SPLIT_K": 4}, 4096, 4096, 8)
    x, w, _ = make_operands(8, 4096, 4096, torch.bfloat16, "cuda")
    layer = Layer("model.layers.0.self_attn.o_proj")
    fn = torch.compile(lambda t: ck.unquantized_gemm(layer, t, w) * 2, fullgraph=True)
    out = fn(x)
    assert check_close(out / 2, x, w).ok
    assert set(ck.KERNEL_COUNTS[layer.prefix]) == {"triton_splitk"}


@pytest.mark.gpu
def test_cuda_graph_replay_runs_the_kernel(tmp_path, monkeypatch, restore_table):
    from custom_kernels.profiling import assert_ran_in_graph

    _gpu_table(tmp_path, monkeypatch, "triton_splitk", {"BLOCK_N": 64, "BLOCK_K": 128, "SPLIT_K": 4}, 4096, 4096, 1)
    ck.enable_device_counts(True)
    try:
        x, w, _ = make_operands(1, 4096, 4096, torch.bfloat16, "cuda")
        layer = Layer("model.layers.0.self_attn.o_proj")
        static_x = x.clone()
        ck.unquantized_gemm(layer, static_x, w)  # warm-up (compiles) outside the capture
        torch.cuda.synchronize()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            static_y = ck.unquantized_gemm(layer, static_x, w)
        host_after_capture = ck.CALL_COUNTS[layer.prefix]
        for seed in range(3):
            new_x, _, _ = make_operands(1, 4096, 4096, torch.bfloat16, "cuda", seed=100 + seed)
            static_x.copy_(new_x)
            graph.replay()
            torch.cuda.synchronize()
            assert check_close(static_y, new_x, w).ok  # replay recomputes with the new input
        assert ck.CALL_COUNTS[layer.prefix] == host_after_capture == 2  # replays run no Python
        # device counter: warm-up ran it, capture only recorded it, each replay runs it
        assert ck.device_call_counts()[layer.prefix] == 1 + 3
        assert assert_ran_in_graph(graph, "triton_splitk", replays=2) >= 2
    finally:
        ck.enable_device_counts(False)


@pytest.mark.gpu
def test_compile_with_cudagraphs_mode(tmp_path, monkeypatch, restore_table):
    """torch.compile(mode='reduce-overhead') captures the op into inductor's CUDA graphs."""
    from custom_kernels.profiling import custom_kernels_in, kernel_counts

    _gpu_table(tmp_path, monkeypatch, "triton_splitk", {"BLOCK_N": 64, "BLOCK_K": 128, "SPLIT_K": 2}, 2560, 2048, 4)
    x, w, _ = make_operands(4, 2560, 2048, torch.bfloat16, "cuda")
    layer = Layer("model.layers.1.self_attn.qkv_proj")
    fn = torch.compile(lambda t: ck.unquantized_gemm(layer, t, w) + 1, fullgraph=True, mode="reduce-overhead")
    for _ in range(3):
        out = fn(x)
    assert check_close(out - 1, x, w).ok
    seen = custom_kernels_in(kernel_counts(lambda: fn(x)))
    assert seen.get("triton_splitk", 0) >= 1


@pytest.mark.gpu
def test_route_decision_follows_this_gpus_table():
    from custom_kernels.dispatch import DTYPE_NAMES, active_table, gpu_name

    unknown = torch.empty(3, 5, dtype=torch.bfloat16, device="cuda")  # a shape no table holds
    routed, why = ck.route_decision(unknown)
    assert not routed and why.startswith("no tuned winner for 3x5")
    gpu = gpu_name(unknown.device)
    shapes = active_table().gpus.get(gpu, {}).get(DTYPE_NAMES[torch.bfloat16], {}).get("shapes", {})
    winners = [key for key, buckets in shapes.items() if any(e.get("kernel") != "cublas" for e in buckets.values())]
    if not winners:
        pytest.skip(f"the table has no bf16 winner on {gpu}")
    n, k = map(int, winners[0].split("x"))
    assert ck.route_decision(torch.empty(n, k, dtype=torch.bfloat16, device="cuda")) == (
        True, f"tuned winner for {n}x{k}")
