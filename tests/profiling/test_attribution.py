"""Attribution: real torch.profiler traces of a small model on CPU (baseline: F.linear; custom: every linear through
custom_kernels' op) -> time per category baseline vs custom, the summed delta beside the session's measured one,
the chart, and the task end to end; plus the CUDA side of the launch attribution on a trace in the format
torch.profiler exports on a GPU (kernels matched to their launch by correlation id)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from workbench.bench.kernels import import_custom_kernels  # noqa: E402
from workbench.errors import WorkbenchError  # noqa: E402
from workbench.models import KERNELS_PACKAGE  # noqa: E402
from workbench.profile import attribution, gaps  # noqa: E402
from workbench.profile.run import analyse_session  # noqa: E402
from workbench.trace.kernel_map import build_index  # noqa: E402
from workbench.trace.kernels import profile_to_chrome_trace  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
F = torch.nn.functional


class Block(torch.nn.Module):
    """norm -> up -> silu -> down, residual: the shape of a decoder MLP."""

    def __init__(self, routed: bool):
        super().__init__()
        self.norm, self.up, self.down = torch.nn.LayerNorm(64), torch.nn.Linear(64, 192), torch.nn.Linear(192, 64)
        self.routed = routed
        self.ck = import_custom_kernels(ROOT / "custom_kernels") if routed else None

    def linear(self, x, layer, name):
        if self.routed:
            return self.ck.op.linear(x, layer.weight, layer.bias, name)
        return F.linear(x, layer.weight, layer.bias)

    def forward(self, x):
        return x + self.linear(F.silu(self.linear(self.norm(x), self.up, "up")), self.down, "down")


def _session(tmp_path: Path) -> Path:
    """A session folder with one CPU-profiled generate per arm and the summary a latency A/B writes."""
    session = tmp_path / "results" / "20261130-080000-tiny"
    torch.manual_seed(0)
    x = torch.randn(4, 16, 64)
    # The first profiled op of a process pays the profiler's own start-up (37 ms in one layer_norm here).
    profile_to_chrome_trace(lambda: Block(False)(x), tmp_path / "throwaway.json", cuda=False)
    for arm in attribution.ARMS:
        model = torch.nn.Sequential(*[Block(arm == "custom") for _ in range(3)]).eval()
        with torch.no_grad():
            model(x)  # warm-up, as the guest driver does
            profile_to_chrome_trace(lambda m=model: m(x), session / "profile" / "latency" / arm / "w.pt.trace.json",
                                    cuda=False)
    (session / "plan.json").write_text(json.dumps({"spec": {"model": "tiny", "mode": "latency"}}))
    (session / "summary.json").write_text(json.dumps({"comparisons": [
        {"mode": "latency", "metric": "p50_s", "baseline_median": 0.200, "custom_median": 0.210,
         "verdict": "custom slower"}], "paired": {}}))
    return session


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    return _session(tmp_path_factory.mktemp("attr"))


def test_categories_per_arm_from_real_cpu_traces(session, tmp_path):
    result, path, chart = analyse_session(session, "latency", None, out_dir=tmp_path)
    rows = {r.category: r for r in result.rows}
    assert rows["GEMM ATen"].baseline_gpu_time_us > 0 and rows["GEMM ATen"].custom_gpu_time_us == 0
    # Every custom GEMM ran inside the op (its F.linear fallback on CPU): attributed to the op.
    assert rows["GEMM ATen via op"].custom_gpu_time_us > 0 and rows["GEMM ATen via op"].baseline_gpu_time_us == 0
    assert rows["GEMM ATen via op"].custom_calls >= 6  # 2 linears x 3 blocks, each at least one GEMM op
    assert rows["norm/activation"].baseline_gpu_time_us > 0 and rows["norm/activation"].custom_gpu_time_us > 0
    assert rows[attribution.OP_ITSELF].custom_calls == 6 and rows[attribution.OP_ITSELF].baseline_calls == 0
    assert sum(r.baseline_gpu_time_us for r in result.rows) == pytest.approx(result.baseline_gpu_time_us)
    assert result.kernel_delta_us == pytest.approx(sum(r.delta_us for r in result.rows))
    assert result.kernel_delta_us == pytest.approx(result.custom_gpu_time_us - result.baseline_gpu_time_us)
    assert result.kernel_delta_pct == pytest.approx(100 * result.kernel_delta_us / result.baseline_gpu_time_us)
    m = result.measured
    assert m["delta_pct"] == pytest.approx(5.0) and m["source"] == "latency p50_s medians"
    assert m["kernel_delta_pct_of_e2e"] == pytest.approx(100 * result.kernel_delta_us * 1e-6 / 0.2)
    saved = json.loads(path.read_text())
    assert saved["device"] == "cpu" and [r["category"] for r in saved["rows"]] == [r.category for r in result.rows]
    assert chart is not None and chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_task_prints_the_table_and_says_what_is_missing(session, tmp_path):
    env = {"PATH": "/usr/bin:/bin", "INVOKE_WORKBENCH_RESULTS": str(session.parent),
           "INVOKE_WORKBENCH_PYTHON": sys.executable}

    def invoke(*args):
        return subprocess.run([sys.executable, "-m", "invoke", *args], cwd=ROOT, capture_output=True, text=True,
                              env=env, timeout=300)

    done = invoke("profile.attribute", session.name, "--no-run", "--runtime", "host")
    assert done.returncode == 0, done.stderr
    assert "GEMM ATen via op" in done.stdout and "measured end to end: +5.00% time" in done.stdout
    assert (session / "profile" / "latency" / "attribution-latency.json").is_file()
    cases = ((("profile.attribute", "no-such-session", "--no-run"), "error: unknown session 'no-such-session'"),
             (("profile.attribute", session.name, "--mode", "throughput", "--no-run", "--runtime", "host"),
              "has no trace for the baseline and custom arm"))
    for args, says in cases:
        done = invoke(*args)
        assert done.returncode == 1 and "Traceback" not in done.stderr
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and says in lines[0], done.stderr


def _cuda_trace(path: Path) -> Path:
    """Host ops, runtime launches and device kernels as torch.profiler exports them from a CUDA run."""
    cpu = {"ph": "X", "pid": 100, "tid": 100}
    gpu = {"ph": "X", "pid": 0, "tid": 7}
    events = [
        {**cpu, "cat": "cpu_op", "name": "custom_kernels::linear", "ts": 0, "dur": 100},
        {**cpu, "cat": "cpu_op", "name": "custom_kernels_cuda::cublaslt_linear", "ts": 10, "dur": 40},
        {**cpu, "cat": "cuda_runtime", "name": "cudaLaunchKernel", "ts": 20, "dur": 5, "args": {"correlation": 1}},
        {**cpu, "cat": "cuda_runtime", "name": "cuLaunchKernel", "ts": 60, "dur": 5, "args": {"correlation": 2}},
        {**cpu, "cat": "cpu_op", "name": "custom_kernels::linear", "ts": 120, "dur": 30},
        {**cpu, "cat": "cuda_runtime", "name": "cudaLaunchKernel", "ts": 130, "dur": 5, "args": {"correlation": 3}},
        {**cpu, "cat": "cpu_op", "name": "aten::mm", "ts": 200, "dur": 30},
        {**cpu, "cat": "cuda_runtime", "name": "cudaLaunchKernel", "ts": 210, "dur": 5, "args": {"correlation": 4}},
        {**cpu, "cat": "cuda_runtime", "name": "cudaMemcpyAsync", "ts": 240, "dur": 5, "args": {"correlation": 5}},
        {**cpu, "cat": "cuda_runtime", "name": "cudaGraphLaunch", "ts": 260, "dur": 5, "args": {"correlation": 6}},
        {**gpu, "cat": "kernel", "name": "nvjet_tst_64x8_64x16_4x1_v_bz_TNT", "ts": 300, "dur": 11.0,
         "args": {"correlation": 1}},
        {**gpu, "cat": "kernel", "name": "_gemm_splitk", "ts": 320, "dur": 7.0, "args": {"correlation": 2}},
        {**gpu, "cat": "kernel", "name": "sm90_xmma_gemm_bf16bf16_bf16f32_f32_tn_n_tilesize64x64x64", "ts": 330,
         "dur": 5.0, "args": {"correlation": 3}},
        {**gpu, "cat": "kernel", "name": "sm90_xmma_gemm_bf16bf16_bf16f32_f32_tn_n_tilesize64x64x64", "ts": 340,
         "dur": 13.0, "args": {"correlation": 4}},
        {**gpu, "cat": "gpu_memcpy", "name": "Memcpy DtoD (Device -> Device)", "ts": 360, "dur": 2.0,
         "args": {"correlation": 5}},
        {**gpu, "cat": "kernel", "name": "void vllm::act_and_mul_kernel<c10::BFloat16, "
         "&vllm::silu_kernel<c10::BFloat16>, (bool)1>(c10::BFloat16*, c10::BFloat16 const*, int)", "ts": 370,
         "dur": 3.0, "args": {"correlation": 6}},
    ]
    path.write_text(json.dumps({"traceEvents": events}))
    return path


def test_cuda_kernels_are_attributed_to_the_op_that_launched_them(tmp_path):
    index = build_index(None, custom=ROOT / KERNELS_PACKAGE)
    arm = attribution.arm_profile("custom", [_cuda_trace(tmp_path / "c.pt.trace.json")], index, "cuda")
    assert arm.gpu_time_us == {"GEMM cuBLASLt via op": 11.0, "GEMM custom Triton": 7.0, "GEMM cuBLAS via op": 5.0,
                               "GEMM cuBLAS": 13.0, "copies": 2.0, "norm/activation": 3.0}
    assert attribution.categories({"custom": arm}) == ["GEMM cuBLAS", "GEMM cuBLAS via op", "GEMM cuBLASLt via op",
                                                       "GEMM custom Triton", "norm/activation", "copies"]


def test_no_traces_is_one_line():
    with pytest.raises(WorkbenchError, match="no trace files for the custom arm"):
        attribution.arm_profile("custom", [], None, "cuda")


def _rank_trace(path: Path, gemm_us: float, allreduce_us: float) -> Path:
    """One rank's decode step at TP=2: a GEMM, vLLM's custom all-reduce and an NCCL all-reduce (graph replays)."""
    gpu = {"ph": "X", "pid": 0, "tid": 7, "cat": "kernel"}
    events = [{**gpu, "name": "nvjet_sm90_tst_64x8_64x16_2x1_v_bz_TNT", "ts": 0, "dur": gemm_us},
              {**gpu, "name": "void vllm::cross_device_reduce_1stage<__nv_bfloat16, 2>(vllm::RankData*, "
                              "vllm::RankSignals, vllm::Signal*, __nv_bfloat16*, int, int)", "ts": 50,
               "dur": allreduce_us / 2},
              {**gpu, "name": "ncclDevKernel_AllReduce_Sum_bf16_RING_LL(ncclDevKernelArgsStorage<4096ul>)",
               "ts": 100, "dur": allreduce_us / 2}]
    path.write_text(json.dumps({"traceEvents": events}))
    return path


def test_collectives_are_shown_but_not_summed_and_ranks_share_the_delta(tmp_path):
    """A collective's kernel waits for the slowest rank: its time is the other ranks' lateness. Here the baseline's
    ranks waited 90 µs longer in their all-reduces while their GEMMs took what the custom arm's took plus 1 µs each:
    the summed delta is the GEMMs' -2 µs over two ranks, -1 µs of one rank's 100 µs step."""
    index = build_index(None, custom=ROOT / KERNELS_PACKAGE)
    arms = {arm: attribution.arm_profile(arm, [_rank_trace(tmp_path / f"{arm}-rank{r}.pt.trace.json", gemm, wait)
                                               for r in (0, 1)], index, "cuda")
            for arm, gemm, wait in (("baseline", 11.0, 60.0), ("custom", 10.0, 15.0))}
    assert arms["baseline"].ranks == 2 and arms["baseline"].gpu_time_us["communication"] == 120.0
    result = attribution.attribute(arms["baseline"], arms["custom"], {"baseline_s": 100e-6, "delta_pct": 1.0})
    assert [r.category for r in result.rows] == ["GEMM cuBLAS", "communication"]
    assert result.not_summed == {"communication": -90.0}
    assert result.kernel_delta_us == -2.0 and result.kernel_delta_pct == pytest.approx(-2.0 / 22.0 * 100)
    assert result.measured["kernel_delta_pct_of_e2e"] == pytest.approx(-1.0)
    assert result.baseline_gpu_time_us == 142.0  # the table's totals still hold every kernel


def _step_trace(path: Path, waits_us: list[float]) -> Path:
    """A step of GEMMs on two streams (one overlapping the other), then kernels separated by ``waits_us``."""
    gpu = {"ph": "X", "pid": 0, "cat": "kernel"}
    events = [{**gpu, "tid": 7, "name": "nvjet_sm90_tst_64x8_64x16_2x1_v_bz_TNT", "ts": 0, "dur": 50},
              {**gpu, "tid": 9, "name": "void vllm::rms_norm_kernel<c10::BFloat16>(int)", "ts": 40, "dur": 20},
              {**gpu, "tid": 7, "cat": "gpu_memcpy", "name": "Memcpy DtoD (Device -> Device)", "ts": 60, "dur": 10}]
    t = 70.0
    for i, wait in enumerate(waits_us):
        t += wait
        events.append({**gpu, "tid": 7, "name": f"void kernel_{i}(float*)", "ts": t, "dur": 30})
        t += 30
    path.write_text(json.dumps({"traceEvents": events}))
    return path


def test_gpu_idle_between_kernels_is_measured_per_arm_and_compared(tmp_path):
    """The gaps no kernel sum holds: the custom arm's kernels take what the baseline's take, but the GPU waits
    2 × 400 µs longer between them (host-side cost); a 50 µs wait is launch latency and is not counted as a gap."""
    index = build_index(None, custom=ROOT / KERNELS_PACKAGE)
    arms = {arm: attribution.arm_profile(arm, [_step_trace(tmp_path / f"{arm}.pt.trace.json", waits)], index, "cuda")
            for arm, waits in (("baseline", [50, 200, 50]), ("custom", [50, 600, 450]))}
    base, custom = arms["baseline"].idle, arms["custom"].idle
    assert base.busy_us == custom.busy_us == 70 + 3 * 30  # overlapping streams count once
    assert (base.gaps, base.gap_us, custom.gaps, custom.gap_us) == (1, 200.0, 2, 1050.0)
    assert base.idle_us == 300.0 and custom.idle_us == 1100.0 and base.span_us == 460.0
    top = custom.largest[0]
    assert (top.us, top.at_us, top.before, top.after) == (600.0, 150.0, "kernel_0", "kernel_1")
    result = attribution.attribute(arms["baseline"], arms["custom"])
    assert result.kernel_delta_us == 0.0 and set(result.idle) == {"baseline", "custom"}
    lines = gaps.report(result.idle)
    assert lines[0].startswith("GPU idle, baseline: 0.30 ms of its 0.5 ms span (1 gaps over 100 µs: 0.20 ms)")
    assert lines[2].startswith("GPU idle, custom - baseline: +0.80 ms (+173.91% of the baseline's span)")
    assert json.loads(json.dumps(result.to_json()))["idle"]["custom"]["gaps"] == 2


def test_ranks_add_their_idle_and_a_cpu_trace_has_none(tmp_path, session):
    index = build_index(None, custom=ROOT / KERNELS_PACKAGE)
    two = attribution.arm_profile("custom", [_step_trace(tmp_path / f"r{r}.pt.trace.json", [50, 300, 50])
                                             for r in (0, 1)], index, "cuda")
    assert (two.idle.gaps, two.idle.gap_us, two.idle.span_us) == (2, 600.0, 2 * 560.0)
    cpu = attribution.arm_profile("custom", attribution.session_traces(session / "profile" / "latency")["custom"],
                                  index, "cpu")
    assert cpu.idle is None
