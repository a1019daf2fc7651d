"""Nsight Systems: vLLM's documented flags in the command, the kernel summary parser, and the one line when
`nsys stats` cannot turn a capture into a report.

The summary is built as `nsys stats --report cuda_gpu_kern_sum --format csv` writes it (the Nsight Systems user
guide's stats report "cuda_gpu_kern_sum": columns Time (%), Total Time (ns), Instances, Avg, Med, Min, Max,
StdDev (ns), Name); the rows are those of vLLM's own example in docs/contributing/profiling.md (0.24.0).
"""

from __future__ import annotations

import csv
import io
import subprocess
import sys
from pathlib import Path

import pytest

from workbench.bench import plan as benchplan
from workbench.config import Settings
from workbench.errors import WorkbenchError
from workbench.profile import capture, nsys
from workbench.profile.run import run_nsys
from workbench.runtime import HostRuntime, Places

ROOT = Path(__file__).resolve().parents[2]
PLACES = Places(fork="/w/vllm", kernels="/w/ck", patches="/w/patches", results="/w/results", wheels="/w/wheels",
                guest="/w/guest", state="/opt/workbench", hf_cache="/cache/hf", ccache="/cache/ccache")
VLLM_DOC_ROWS = [  # Time (%), Total Time (ns), Instances, Avg, Med, Min, Max, StdDev, Name
    (46.3, 10327352338, 17505, 589965.9, 144383.0, 27040, 3126460, 944263.8,
     "sm90_xmma_gemm_bf16bf16_bf16f32_f32_tn_n_tilesize128x128x64_warpgroupsize1x1x1_execute_segment_k_off_kernel"),
    (5.0, 1119749165, 18912, 59208.4, 9056.0, 6784, 2578366, 271581.7,
     "void vllm::act_and_mul_kernel<c10::BFloat16, &vllm::silu_kernel<c10::BFloat16>, (bool)1>(T1 *, const T1 *, int)"),
    (2.6, 587283113, 37824, 15526.7, 3008.0, 2719, 2517756, 139091.1,
     "std::enable_if<T2>(int)0&&vllm::_typeConvert<T1>::exists, void>::type vllm::fused_add_rms_norm_kernel<c10::"
     "BFloat16, (int)8>(T1 *, T1 *, const T1 *, float, int, int)"),
]


def _summary() -> str:
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(["Time (%)", "Total Time (ns)", "Instances", "Avg (ns)", "Med (ns)", "Min (ns)", "Max (ns)",
                "StdDev (ns)", "Name"])
    w.writerows(VLLM_DOC_ROWS)
    return out.getvalue()


def _work(arm: str, **kw) -> capture.Workload:
    spec = capture.profile_spec(benchplan.BenchSpec(model="qwen2.5-0.5b"), output_len=8)
    return capture.workload(spec, arm, PLACES, "/w/results/S/profile/nsys", benchplan.ModelArgs("/w/m"), "python",
                            ROOT, eager=False, vllm_version="0.24.0", **kw)


def test_the_command_carries_vllms_flags_and_its_capture_range():
    p = nsys.plan(_work("custom"))
    argv = list(p.argv)
    assert argv[:2] == ["nsys", "profile"]
    for flag in ("--trace-fork-before-exec=true", "--cuda-graph-trace=node", "--capture-range=cudaProfilerApi",
                 "--capture-range-end=stop"):
        assert flag in argv
    bench = argv[argv.index("--output") + 2:]
    assert "--enforce-eager" not in bench and "--profile" in bench  # CUDA graphs stay on: nodes are traced
    assert p.env["VLLM_WORKER_MULTIPROC_METHOD"] == "spawn" and p.env["CUSTOM_KERNELS_NVTX"] == "1"
    assert p.report == "/w/results/S/profile/nsys/nsys-custom.nsys-rep"
    assert p.stats_argv[-1] == p.report and p.stats_csv == "/w/results/S/profile/nsys/nsys-custom_cuda_gpu_kern_sum.csv"
    assert "--capture-range=cudaProfilerApi" not in nsys.plan(_work("baseline", from_start=True)).argv


def test_kernel_summary_rows_with_category_and_library():
    rows = nsys.kernel_summary("Processing [report.sqlite] with [cuda_gpu_kern_sum.py]...\n" + _summary())
    assert [r.instances for r in rows] == [17505, 18912, 37824]
    gemm, act, norm = rows
    assert gemm.gpu_time_us == pytest.approx(10327352.338) and gemm.avg_time_us == pytest.approx(589.96591, rel=1e-4)
    assert (gemm.category, gemm.origin) == ("gemm", "cublas")
    assert act.category == "activation" and norm.category == "norm"
    with pytest.raises(WorkbenchError, match="no nsys kernel-summary header"):
        nsys.kernel_summary("ERROR: no CUDA kernel data\n")


def _tool(tmp_path: Path, stats_code: int) -> Path:
    """A stand-in nsys (none can run here): `profile` writes the capture file and runs the command, `stats`
    writes the summary or fails as nsys did on the H200 host."""
    tool = tmp_path / "nsys"
    tool.write_text(f"""#!{sys.executable}
import pathlib, subprocess, sys
args = sys.argv[1:]
if args[0] == "profile":
    out = args[args.index("--output") + 1]
    pathlib.Path(out + ".nsys-rep").write_bytes(b"capture")
    sys.exit(subprocess.call(args[args.index("--output") + 2:]))
if {stats_code}:
    print("Exporting to SQLite failed: unknown event type", file=sys.stderr)
    sys.exit({stats_code})
out = args[args.index("--output") + 1]
pathlib.Path(out + "_cuda_gpu_kern_sum.csv").write_text({_summary()!r})
""")
    tool.chmod(0o755)
    return tool


@pytest.mark.parametrize("stats_code", [0, 1])
def test_run_reads_the_summary_or_names_the_kept_capture(tmp_path, stats_code):
    rt = HostRuntime(Settings(root=tmp_path, python=sys.executable, results=str(tmp_path / "results")))
    folder = tmp_path / "results" / "S" / "profile" / "nsys"
    work = capture.Workload("custom", (sys.executable, "-c", "print('profiled batch')"), {}, str(folder))
    p = nsys.plan(work, nsys=str(_tool(tmp_path, stats_code)))
    (tmp_path / "results").mkdir()
    if stats_code == 0:
        rows, path = run_nsys(rt, p, quiet=True)
        assert [r.instances for r in rows] == [17505, 18912, 37824]
        assert path == folder / "nsys-custom-kernels.json" and (folder / "nsys-custom-kernels.csv").is_file()
        assert "profiled batch" in (folder / "nsys-custom.log").read_text()
        return
    with pytest.raises(WorkbenchError) as err:
        run_nsys(rt, p, quiet=True)
    text = str(err.value)
    assert "nsys stats could not turn the capture into a report (exit 1: Exporting to SQLite failed" in text
    assert f"the capture {folder / 'nsys-custom.nsys-rep'} was kept" in text and "\n" not in text


def test_missing_nsys_is_one_line(tmp_path):
    done = subprocess.run([sys.executable, "-m", "invoke", "profile.nsys", "--model", "qwen2.5-0.5b", "--runtime",
                           "host", "--tool", "no-such-nsys"], cwd=ROOT, capture_output=True, text=True,
                          env={"PATH": "/usr/bin:/bin", "INVOKE_WORKBENCH_RESULTS": str(tmp_path),
                               "INVOKE_WORKBENCH_PYTHON": sys.executable}, timeout=300)
    assert done.returncode == 1, done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("error: no-such-nsys not found on this host") and "nsight-systems-cli" in last
    assert "Traceback" not in done.stderr
