"""Nsight Compute: the command per arm (selection, environment, launch limits), the raw-page CSV parser, the
peaks it is measured against, and the one-line errors.

The export is built the way `ncu --import R.ncu-rep --csv --page raw --print-units base` writes it, following the
Nsight Compute CLI user guide ("Output Pages": the raw page lists every collected metric; `--csv`; `--print-units
base` prints base units: nsecond, byte): a header row of the identity columns ("ID","Process ID","Process Name",
"Host Name","Kernel Name","Context","Stream","Block Size","Grid Size","Device","CC") and one column per metric, a
second row holding each metric's unit (empty under the identity columns), then one row per profiled launch, values
quoted with thousands separators; ncu's own `==PROF==` lines may come first when its output is captured whole.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from workbench.bench import plan as benchplan
from workbench.config import Settings
from workbench.errors import WorkbenchError
from workbench.profile import capture, ncu
from workbench.profile.peaks import SPEC, measured, peaks_for
from workbench.runtime import HostRuntime, Places

ROOT = Path(__file__).resolve().parents[2]
PLACES = Places(fork="/w/vllm", kernels="/w/ck", patches="/w/patches", results="/w/results", wheels="/w/wheels",
                guest="/w/guest", state="/opt/workbench", hf_cache="/cache/hf", ccache="/cache/ccache")
MODEL = benchplan.ModelArgs("/w/results/.models/qwen2.5-0.5b-dummy", "dummy",
                            "/w/results/.models/qwen2.5-0.5b-dummy/tokenizer")
SPLITK = "_gemm_splitk"  # the custom Triton split-K kernel, as candidates.py names its trace_name


def _work(arm: str, spec: benchplan.BenchSpec | None = None, **kw) -> capture.Workload:
    spec = capture.profile_spec(spec or benchplan.BenchSpec(model="qwen2.5-0.5b"), output_len=8)
    return capture.workload(spec, arm, PLACES, "/w/results/S/profile/ncu", MODEL, "python", ROOT, eager=True,
                            vllm_version="0.24.0", **kw)


def _export(launches: list[tuple[str, dict[str, str]]], units: dict[str, str], prof_lines: bool = True) -> str:
    metrics = list(units)
    out = io.StringIO()
    if prof_lines:
        out.write("==PROF== Connected to process 4242 (/usr/bin/python3.12)\n")
        out.write("==PROF== Disconnected from process 4242\n")
    w = csv.writer(out, quoting=csv.QUOTE_ALL, lineterminator="\n")
    w.writerow([*ncu.IDENTITY, *metrics])
    w.writerow([""] * len(ncu.IDENTITY) + [units[m] for m in metrics])
    for i, (kernel, values) in enumerate(launches):
        w.writerow([str(i), "4242", "python3.12", "127.0.0.1", kernel, "1", "7", "(128, 1, 1)", "(132, 1, 1)", "0",
                    "9.0", *[values.get(m, "") for m in metrics]])
    return out.getvalue()


BASE_UNITS = {"gpu__time_duration.sum": "nsecond", "dram__bytes_read.sum": "byte", "dram__bytes_write.sum": "byte",
              "smsp__sass_thread_inst_executed_op_ffma_pred_on.sum": "inst",
              "smsp__sass_thread_inst_executed_op_fadd_pred_on.sum": "inst",
              "sm__ops_path_tensor_src_bf16_dst_fp32.sum": "", "device__attribute_display_name": ""}
GEMV = "nvjet_tst_64x8_64x16_4x1_v_bz_TNT"
LAUNCHES = [
    (GEMV, {"gpu__time_duration.sum": "10,240", "dram__bytes_read.sum": "40,000,000", "dram__bytes_write.sum": "16,384",
            "smsp__sass_thread_inst_executed_op_ffma_pred_on.sum": "0",
            "smsp__sass_thread_inst_executed_op_fadd_pred_on.sum": "0",
            "sm__ops_path_tensor_src_bf16_dst_fp32.sum": "58,720,256",
            "device__attribute_display_name": "NVIDIA H200"}),
    (GEMV, {"gpu__time_duration.sum": "9,760", "dram__bytes_read.sum": "40,000,000", "dram__bytes_write.sum": "16,384",
            "smsp__sass_thread_inst_executed_op_ffma_pred_on.sum": "0",
            "smsp__sass_thread_inst_executed_op_fadd_pred_on.sum": "0",
            "sm__ops_path_tensor_src_bf16_dst_fp32.sum": "58,720,256",
            "device__attribute_display_name": "NVIDIA H200"}),
    ("splitKreduce_kernel", {"gpu__time_duration.sum": "2,000", "dram__bytes_read.sum": "1,000,000",
                             "dram__bytes_write.sum": "500,000",
                             "smsp__sass_thread_inst_executed_op_ffma_pred_on.sum": "1,000",
                             "smsp__sass_thread_inst_executed_op_fadd_pred_on.sum": "250,000",
                             "sm__ops_path_tensor_src_bf16_dst_fp32.sum": "0",
                             "device__attribute_display_name": "NVIDIA H200"}),
]


# ------------------------------------------------------------------------------------------------ planner
def test_custom_arm_selects_the_ops_nvtx_range_in_eager_mode():
    p = ncu.plan(_work("custom"), "custom_kernels.linear", launch_count=150, launch_skip=3)
    argv = list(p.argv)
    assert argv[argv.index("--nvtx-include") + 1] == "custom_kernels.linear/"  # a push/pop range: trailing slash
    assert "--nvtx" in argv and "-k" not in argv
    assert argv[argv.index("--launch-count") + 1] == "150" and argv[argv.index("--launch-skip") + 1] == "3"
    assert argv[argv.index("--target-processes") + 1] == "all"  # the engine core is a child process
    assert argv[argv.index("--profile-from-start") + 1] == "off"  # vLLM's cudaProfilerStart opens the window
    assert argv[argv.index("--clock-control") + 1] == "none"
    bench = argv[argv.index("--force-overwrite") + 1:]
    assert bench[:5] == ["python", "-m", "vllm.entrypoints.cli.main", "bench", "latency"]
    assert "--enforce-eager" in bench and "--profile" in bench
    assert json.loads(bench[bench.index("--profiler-config") + 1]) == {"profiler": "cuda"}
    assert bench[bench.index("--output-len") + 1] == "8" and bench[bench.index("--num-iters") + 1] == "1"
    # vLLM takes 0.3 of the GPU, so ncu saves and restores device memory on the device, not in host memory.
    assert bench[bench.index("--gpu-memory-utilization") + 1] == ncu.GPU_MEMORY_UTILIZATION
    assert p.env["VLLM_USE_CUSTOM_GEMM"] == "1" and p.env["CUSTOM_KERNELS_NVTX"] == "1"
    assert p.env["VLLM_WORKER_MULTIPROC_METHOD"] == "spawn"
    assert p.env["VLLM_CACHE_ROOT"].startswith("/w/results/.vllm-cache/custom")
    assert p.report == "/w/results/S/profile/ncu/ncu-custom.ncu-rep"
    assert argv[argv.index("--export") + 1] + ".ncu-rep" == p.report
    assert list(p.export_argv) == ["ncu", "--import", p.report, "--csv", "--page", "raw", "--print-units", "base"]


def test_a_memory_share_in_the_sessions_flags_wins():
    spec = benchplan.BenchSpec(model="qwen2.5-0.5b", extra=("--gpu-memory-utilization", "0.5"))
    argv = list(ncu.plan(_work("custom", spec), "custom_kernels.linear").argv)
    assert argv.count("--gpu-memory-utilization") == 1 and argv[argv.index("--gpu-memory-utilization") + 1] == "0.5"


def test_baseline_arm_selects_cublas_gemms_by_name():
    p = ncu.plan(_work("baseline"), "custom_kernels.linear")
    argv = list(p.argv)
    assert "--nvtx" not in argv and argv[argv.index("-k") + 1] == ncu.CUBLAS_GEMM_REGEX
    assert p.env["VLLM_USE_CUSTOM_GEMM"] == "0" and p.env["CUSTOM_KERNELS_NVTX"] == "0"
    assert p.env["VLLM_CACHE_ROOT"] == "/w/results/.vllm-cache/baseline"
    rx = re.compile(ncu.CUBLAS_GEMM_REGEX.removeprefix("regex:"))
    # cuBLAS/cuBLASLt names from the H200 traces and vLLM's nsys example; never vLLM's or the custom kernels.
    for name in (GEMV, "sm90_xmma_gemm_bf16bf16_bf16f32_f32_tn_n_tilesize128x128x64_warpgroupsize1x1x1",
                 "splitKreduce_kernel", "gemv2T_kernel_val", "ampere_bf16_s16816gemm_bf16_128x64_ldg8_f2f_tn"):
        assert rx.search(name), name
    for name in ("act_and_mul_kernel", "fused_add_rms_norm_kernel", SPLITK, "_gemm_tma_persistent",
                 "reshape_and_cache_flash_kernel", "kernel_unified_attention_2d"):
        assert not rx.search(name), name


def test_the_filter_is_the_range_the_op_opens():
    env = {**os.environ, "PYTHONPATH": str(ROOT / "custom_kernels" / "src"), "CUSTOM_KERNELS_NVTX": "1"}
    code = "import custom_kernels.op as op; print(op.NVTX_RANGE, op.NVTX_ENV)"
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert tuple(done.stdout.split()) == capture.nvtx_names(ROOT)


def test_a_session_spec_carries_its_model_lengths_and_layer_filter(tmp_path):
    spec = benchplan.BenchSpec(model="llama-3-8b", mode="throughput", batch_size=4, input_len=512, output_len=64,
                               gemm_layers="*.mlp.*", extra=("--max-model-len", "2048"))
    (tmp_path / "plan.json").write_text(json.dumps({"spec": {**spec.__dict__, "extra": list(spec.extra)}}))
    loaded = capture.spec_from_session(tmp_path)
    assert loaded == spec
    p = ncu.plan(_work("custom", loaded), "custom_kernels.linear")
    bench = list(p.argv)
    assert bench[bench.index("--input-len") + 1] == "512" and bench[bench.index("--batch-size") + 1] == "4"
    assert bench[bench.index("--max-model-len") + 1] == "2048"
    assert p.env["VLLM_CUSTOM_GEMM_LAYERS"] == "*.mlp.*"


def test_from_start_and_a_kernel_regex():
    p = ncu.plan(_work("custom", from_start=True), "custom_kernels.linear", kernel_regex=SPLITK)
    argv = list(p.argv)
    assert argv[argv.index("--profile-from-start") + 1] == "on" and "--profile" not in argv
    assert argv[argv.index("-k") + 1] == f"regex:{SPLITK}" and "--nvtx-include" not in argv


@pytest.mark.parametrize(("call", "says"), [
    (lambda: _work("both"), "--arm 'both' is not one of baseline, custom"),
    (lambda: capture.workload(capture.profile_spec(benchplan.BenchSpec(), 8), "custom", PLACES, "/w/x", MODEL,
                              "python", ROOT, eager=True, vllm_version="0.13.0"), "vLLM 0.13.0's"),
    (lambda: ncu.plan(_work("custom"), "r", launch_count=0), "--launch-count 0"),
    (lambda: ncu.plan(_work("custom"), "r", metrics=("dram__bytes.sum",)), "--metrics must include gpu__time_dur"),
    (lambda: capture.spec_from_session(Path("/nonexistent/session")), "has no plan.json"),
])
def test_bad_input_is_one_line(call, says):
    with pytest.raises(WorkbenchError) as err:
        call()
    assert says in str(err.value) and "\n" not in str(err.value)


def test_missing_ncu_names_what_to_install(tmp_path):
    from workbench.profile.run import require_tool

    rt = HostRuntime(Settings(root=tmp_path, python=sys.executable))
    require_tool(rt, "bash", "ncu")  # a tool that exists passes
    with pytest.raises(WorkbenchError, match=r"no-such-ncu not found on this host \(.*\): install Nsight Compute"):
        require_tool(rt, "no-such-ncu", "ncu")


# ------------------------------------------------------------------------------------------------ parser
def test_raw_export_becomes_a_table_with_bandwidth_flops_and_peaks(tmp_path):
    path = tmp_path / "ncu-custom.csv"
    path.write_text(_export(LAUNCHES, BASE_UNITS))
    rows, peaks, n = ncu.table_from_export(path, lambda gpu: peaks_for(ROOT, gpu))
    assert n == 3 and [r.kernel for r in rows] == [GEMV, "splitKreduce_kernel"]
    gemv = rows[0]
    seconds = (10_240 + 9_760) * 1e-9
    assert gemv.launches == 2 and gemv.gpu_time_us == pytest.approx(20.0)
    assert gemv.avg_time_us == pytest.approx(10.0)
    assert gemv.dram_gbps == pytest.approx(2 * 40_016_384 / seconds / 1e9)
    assert gemv.tflops == pytest.approx(2 * 58_720_256 / seconds / 1e12)
    h200 = json.loads((ROOT / "custom_kernels/bench/results/nvidia-h200/gemm_bfloat16.json").read_text())["env"]
    assert peaks.source == "measured: custom_kernels/bench/results/nvidia-h200/gemm_bfloat16.json"
    assert gemv.pct_of_copy_bw == pytest.approx(100 * gemv.dram_gbps / h200["peaks"]["copy_gbps"])
    assert gemv.pct_of_matmul_peak == pytest.approx(100 * gemv.tflops / h200["peaks"]["matmul_tflops"])
    reduce = rows[1]
    assert reduce.tflop == pytest.approx((2 * 1_000 + 250_000) / 1e12)  # an FFMA counts two FLOPs


def test_other_units_and_the_newer_tensor_metric_name_give_the_same_rows(tmp_path):
    scaled = []
    for kernel, values in LAUNCHES:
        v = dict(values)
        v["gpu__time_duration.sum"] = str(float(v["gpu__time_duration.sum"].replace(",", "")) / 1e3)
        for m in ("dram__bytes_read.sum", "dram__bytes_write.sum"):
            v[m] = str(float(v[m].replace(",", "")) / 1e6)
        v["sm__ops_path_tensor_src_bf16_dst_fp32_sparsity_off.sum"] = v.pop("sm__ops_path_tensor_src_bf16_dst_fp32.sum")
        scaled.append((kernel, v))
    units = {**BASE_UNITS, "gpu__time_duration.sum": "usecond", "dram__bytes_read.sum": "Mbyte",
             "dram__bytes_write.sum": "Mbyte"}
    units["sm__ops_path_tensor_src_bf16_dst_fp32_sparsity_off.sum"] = units.pop(
        "sm__ops_path_tensor_src_bf16_dst_fp32.sum")
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    a.write_text(_export(LAUNCHES, BASE_UNITS))
    b.write_text(_export(scaled, units, prof_lines=False))
    ra, _, _ = ncu.table_from_export(a, lambda gpu: None)
    rb, _, _ = ncu.table_from_export(b, lambda gpu: None)
    for x, y in zip(ra, rb, strict=True):
        assert x.kernel == y.kernel and x.gpu_time_us == pytest.approx(y.gpu_time_us)
        assert x.dram_gbps == pytest.approx(y.dram_gbps) and x.tflops == pytest.approx(y.tflops)
        assert x.pct_of_copy_bw is None  # no peaks given


def test_peaks_measured_spec_or_none(tmp_path):
    assert measured(ROOT, "NVIDIA H200").copy_gbps > 1000
    spec = peaks_for(tmp_path, "NVIDIA H200")  # a checkout without benchmark results
    assert (spec.copy_gbps, spec.matmul_tflops) == SPEC["NVIDIA H200"] and spec.source.startswith("spec sheet")
    assert peaks_for(tmp_path, "NVIDIA RTX 9999") is None and peaks_for(ROOT, None) is None


def test_bad_exports_are_one_line(tmp_path):
    empty = tmp_path / "none.csv"
    empty.write_text(_export([], BASE_UNITS))
    with pytest.raises(WorkbenchError, match="holds no profiled launch: the filter matched no kernel"):
        ncu.table_from_export(empty, lambda gpu: None)
    junk = tmp_path / "junk.csv"
    junk.write_text("==ERROR== The application returned an error code (1).\n")
    with pytest.raises(WorkbenchError, match="no ncu raw-page header"):
        ncu.table_from_export(junk, lambda gpu: None)
    with pytest.raises(WorkbenchError, match="is missing: ncu --import wrote no CSV"):
        ncu.table_from_export(tmp_path / "absent.csv", lambda gpu: None)
    assert "NVreg_RestrictProfilingToAdminUsers=0" in ncu.log_problem(
        "==ERROR== ERR_NVGPUCTRPERM - The user does not have permission to access NVIDIA GPU Performance Counters")
    assert ncu.log_problem("==PROF== Disconnected from process 1") is None


def _standin_ncu(tmp_path: Path, export: str, refuse_counters: bool = False) -> Path:
    """A stand-in ncu (none can run here): profiling writes the report and runs the command (or refuses the
    counters as ncu does without permission); --import prints the raw page."""
    tool = tmp_path / "ncu"
    tool.write_text(f"""#!{sys.executable}
import pathlib, subprocess, sys
args = sys.argv[1:]
if "--import" in args:
    sys.stdout.write({export!r})
    sys.exit(0)
if {refuse_counters}:
    print("==ERROR== ERR_NVGPUCTRPERM - The user does not have permission to access NVIDIA GPU Performance Counters")
    sys.exit(1)
out = args[args.index("--export") + 1]
pathlib.Path(out + ".ncu-rep").write_bytes(b"report")
sys.exit(subprocess.call(args[args.index("--force-overwrite") + 1:]))
""")
    tool.chmod(0o755)
    return tool


@pytest.mark.parametrize("refuse", [False, True])
def test_run_writes_the_kernel_table_or_says_how_to_get_counters(tmp_path, refuse):
    from workbench.profile.run import run_ncu

    rt = HostRuntime(Settings(root=tmp_path, python=sys.executable, results=str(tmp_path / "results")))
    (tmp_path / "results").mkdir()
    folder = tmp_path / "results" / "S" / "profile" / "ncu"
    work = capture.Workload("custom", (sys.executable, "-c", "print('profiled batch')"), {}, str(folder))
    p = ncu.plan(work, "custom_kernels.linear", ncu=str(_standin_ncu(tmp_path, _export(LAUNCHES, BASE_UNITS), refuse)))
    if refuse:
        with pytest.raises(WorkbenchError, match=r"ERR_NVGPUCTRPERM.*NVreg_RestrictProfilingToAdminUsers=0"):
            run_ncu(rt, p, ROOT, quiet=True)
        return
    rows, path = run_ncu(rt, p, ROOT, quiet=True)
    assert [r.kernel for r in rows] == [GEMV, "splitKreduce_kernel"]
    saved = json.loads(path.read_text())
    assert path == folder / "ncu-custom-kernels.json" and saved["launches"] == 3
    assert saved["peaks"]["source"].startswith("measured: ") and saved["rows"][0]["gpu_time_us"] == pytest.approx(20)
    with (folder / "ncu-custom-kernels.csv").open() as fh:
        table = list(csv.DictReader(fh))
    assert table[0]["kernel"] == GEMV and "dram_gbps" in table[0] and "pct_of_copy_bw" in table[0]
    assert (folder / "ncu-custom.csv").read_text().startswith("==PROF==")  # the raw export is kept as ncu wrote it
    assert "profiled batch" in (folder / "ncu-custom.log").read_text()
