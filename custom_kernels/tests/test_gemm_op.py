"""The contract: custom_kernels.unquantized_gemm / torch.ops.custom_kernels.linear.

CPU: F.linear fallback (exact), forced Triton kernels through the interpreter, 3-D and strided
inputs, bias, fp32, per-layer counters, opcheck (schema + fake impl) and a fullgraph Dynamo trace.
GPU tier: the same in bf16/fp16, torch.compile(fullgraph=True) with inductor, CUDA-graph capture and
replay with the kernel names confirmed from a profiler trace, and device-side counters.
"""

from __future__ import annotations

import os
from pathlib import Path

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


@pytest.mark.parametrize("how", ["direct", "custom_op"])
def test_both_registrations_are_the_same_op_to_torch(how):
    """The registration is an A/B knob (CUSTOM_KERNELS_OP): either way the op computes F.linear, passes opcheck
    and stays one node in a fullgraph trace; only its host cost per call differs."""
    from custom_kernels.op import register

    op = register("custom_kernels_test", f"linear_{how}", how)
    x, w, b = make_operands(4, 24, 40, torch.float32, bias=True)
    assert torch.equal(op(x, w, b, "l"), F.linear(x, w, b))
    torch.library.opcheck(getattr(torch.ops.custom_kernels_test, f"linear_{how}").default, (x, w, b, "l"))
    fn = torch.compile(lambda t: op(t, w, b, "l"), fullgraph=True, backend="eager")
    assert torch.equal(fn(x), F.linear(x, w, b))


def test_the_shipped_op_is_registered_without_custom_ops_dispatch_layers():
    """Registered as vLLM registers its ops (Library.impl on the backend keys): no Autograd kernel of its own, which
    is where torch.library.custom_op's per-call host cost sits."""
    from custom_kernels.op import REGISTRATION, register

    assert REGISTRATION == "direct"
    assert not torch._C._dispatch_has_kernel_for_dispatch_key("custom_kernels::linear", "Autograd")
    register("custom_kernels_test", "linear_layers", "custom_op")  # the check tells the two apart
    assert torch._C._dispatch_has_kernel_for_dispatch_key("custom_kernels_test::linear_layers", "Autograd")
    with pytest.raises(ValueError, match="use one of direct, custom_op"):
        register("custom_kernels_test", "linear_bad", "fast")


def test_an_unknown_registration_stops_the_import_with_what_to_set(tmp_path):
    import subprocess
    import sys

    env = {**os.environ, "CUSTOM_KERNELS_OP": "fast", "PYTHONPATH": str(Path(ck.__file__).parents[1])}
    proc = subprocess.run([sys.executable, "-c", "import custom_kernels"], env=env, capture_output=True, text=True)
    assert proc.returncode != 0
    assert "CUSTOM_KERNELS_OP='fast': use one of direct, custom_op" in proc.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason="on a GPU the routed kernels are timed too (GPU tier)")
def test_host_cost_bench_times_every_variant_on_this_machine():
    """bench.op_overhead --host runs where there is no GPU too (CPU tensors): F.linear and the op both ways."""
    from custom_kernels.bench.op_overhead import host_cost

    result = host_cost(calls=20, rounds=1)
    assert set(result["median_us_per_call"]) == {"F.linear", "op (direct)", "op (custom_op)"}
    assert all(t > 0 for t in result["median_us_per_call"].values())
    assert set(result["op_over_F.linear_us"]) == {"op (direct)", "op (custom_op)"}


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
def test_host_cost_bench_times_the_routed_kernels_launch_on_a_gpu():
    """On a GPU the host bench also times the op launching cuBLASLt and Triton split-K, each really launched
    (the forced kernel is what the op's counters saw), beside F.linear and both registrations."""
    from custom_kernels import KERNEL_COUNTS, reset_counts
    from custom_kernels.bench.op_overhead import host_cost

    reset_counts()
    result = host_cost(calls=20, rounds=1)
    times = result["median_us_per_call"]
    assert {"F.linear", "op (direct)", "op (custom_op)", "op (direct, triton_splitk)"} <= set(times)
    assert all(t > 0 for t in times.values())
    launched = {kernel for counts in KERNEL_COUNTS.values() for kernel in counts}
    assert {name.split(", ")[1].rstrip(")") for name in times if ", " in name} <= launched


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
