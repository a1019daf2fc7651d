"""Nsight Compute on one arm: the command (kernel selection, metrics, launch limits), the CSV export, and
the per-kernel table with achieved DRAM bandwidth, FLOP/s and their share of the GPU's measured peaks.

Selection: in the custom arm, every kernel launched inside the op's NVTX range (``--nvtx --nvtx-include
"custom_kernels.linear/"``: a push/pop range is named with a trailing slash), so its Triton kernels and its
cuBLAS fallbacks alike; in the baseline arm, the cuBLAS/cuBLASLt GEMM kernels by name (``-k regex:``). Both
in eager mode (NVTX ranges are not replayed by CUDA graphs). The export is ncu's raw page
(``--csv --page raw --print-units base``): one header row (identity columns, then one column per metric),
one row of units, then one row per profiled launch.
"""

from __future__ import annotations

import csv
import io
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from workbench.errors import WorkbenchError
from workbench.profile.capture import Workload
from workbench.profile.peaks import Peaks

NCU = "ncu"
# cuBLAS / cuBLASLt GEMM kernel names (the families workbench.trace.kernel_names files under "cublas"): Hopper
# nvjet_* and sm90_xmma_gemm_*, older arch prefixes, gemv and split-K helpers, CUTLASS kernels built into cuBLAS.
CUBLAS_GEMM_REGEX = (r"regex:nvjet|xmma_gemm|gemv|gemmk1|gemmSN|splitKreduce|cutlass.*gemm|"
                     r"(ampere|hopper|sm\d+)_.*gemm|s16816gemm")
# Duration, DRAM traffic, FP32/FP16 instruction counts (what ncu's roofline counts) and the tensor-core
# operation counts; the tensor metric's name differs between ncu releases (2024.3: *_dst_fp32.sum, later
# also *_sparsity_off.sum), so it is requested by regex. The device name names the peaks to compare with.
METRICS = ("gpu__time_duration.sum", "dram__bytes_read.sum", "dram__bytes_write.sum",
           "smsp__sass_thread_inst_executed_op_ffma_pred_on.sum", "smsp__sass_thread_inst_executed_op_fadd_pred_on.sum",
           "smsp__sass_thread_inst_executed_op_fmul_pred_on.sum", "smsp__sass_thread_inst_executed_op_hfma_pred_on.sum",
           "smsp__sass_thread_inst_executed_op_hadd_pred_on.sum", "smsp__sass_thread_inst_executed_op_hmul_pred_on.sum",
           r"regex:sm__ops_path_tensor_src_(bf16|fp16)_dst_fp32(_sparsity_off)?\.sum$",
           "device__attribute_display_name")
# The share of the GPU vLLM may take while ncu profiles it. Before each replay pass ncu saves, and after it
# restores, the device memory a kernel can write; what does not fit beside it on the GPU goes to host memory
# ("Backing up device memory in system memory"), and with vLLM's default 0.9 on an H200 one Llama-3-8B launch
# then took minutes. 0.3 (42 GiB of 141) holds an 8B model's weights and a profiled batch's KV cache, and leaves
# the save on the device. A --gpu-memory-utilization in the session's extra flags wins.
GPU_MEMORY_UTILIZATION = "0.3"
IDENTITY = ("ID", "Process ID", "Process Name", "Host Name", "Kernel Name", "Context", "Stream", "Block Size",
            "Grid Size", "Device", "CC")
_TIME_NS = {"nsecond": 1.0, "ns": 1.0, "usecond": 1e3, "us": 1e3, "msecond": 1e6, "ms": 1e6, "second": 1e9, "s": 1e9}
_BYTES = {"byte": 1.0, "Kbyte": 1e3, "Mbyte": 1e6, "Gbyte": 1e9, "Tbyte": 1e12, "KB": 1e3, "MB": 1e6, "GB": 1e9}
# FLOPs per thread instruction: an FMA is two; half2 instructions are counted once (a lower bound).
_FP_INSTR = {"ffma": 2.0, "fadd": 1.0, "fmul": 1.0, "hfma": 2.0, "hadd": 1.0, "hmul": 1.0}


@dataclass(frozen=True)
class NcuPlan:
    """The ncu command of one arm and the files it leaves (runtime paths)."""

    arm: str
    argv: tuple[str, ...]
    env: dict[str, str]
    report: str  # <folder>/ncu-<arm>.ncu-rep
    log: str
    export_argv: tuple[str, ...]  # ncu --import ... --csv --page raw: the raw CSV on stdout
    csv: str
    selection: str  # the filter, in words


def plan(work: Workload, nvtx_range: str, launch_count: int = 200, launch_skip: int = 0,
         kernel_regex: str | None = None, metrics: tuple[str, ...] = METRICS, ncu: str = NCU) -> NcuPlan:
    """The ncu command line for one arm's profiled batch."""
    if launch_count < 1:
        raise WorkbenchError(f"--launch-count {launch_count}: profile at least 1 launch")
    if launch_skip < 0:
        raise WorkbenchError(f"--launch-skip {launch_skip}: give 0 or more launches to skip")
    if "gpu__time_duration.sum" not in metrics:
        raise WorkbenchError("--metrics must include gpu__time_duration.sum: every row of the table is a duration")
    report = f"{work.folder}/ncu-{work.arm}"
    argv = [ncu, "--target-processes", "all",  # the model runs in vLLM's engine-core child process
            # Clocks as the bench runs them (ncu locks them to base by default), so durations and % of the
            # measured peaks compare with the timed runs.
            "--clock-control", "none",
            "--profile-from-start", "on" if work.from_start else "off",
            "--metrics", ",".join(metrics), "--launch-skip", str(launch_skip), "--launch-count", str(launch_count)]
    if kernel_regex:
        argv += ["-k", kernel_regex if kernel_regex.startswith("regex:") else f"regex:{kernel_regex}"]
        selection = f"kernels matching {kernel_regex}"
    elif work.arm == "custom":
        argv += ["--nvtx", "--nvtx-include", f"{nvtx_range}/"]
        selection = f"every kernel launched inside the op's NVTX range {nvtx_range!r}"
    else:
        argv += ["-k", CUBLAS_GEMM_REGEX]
        selection = "cuBLAS/cuBLASLt GEMM kernels by name"
    bench = list(work.argv)
    if not any(a == "--gpu-memory-utilization" or a.startswith("--gpu-memory-utilization=") for a in bench):
        bench += ["--gpu-memory-utilization", GPU_MEMORY_UTILIZATION]
    argv += ["--export", report, "--force-overwrite", *bench]
    export = (ncu, "--import", f"{report}.ncu-rep", "--csv", "--page", "raw", "--print-units", "base")
    return NcuPlan(arm=work.arm, argv=tuple(argv), env=dict(work.env), report=f"{report}.ncu-rep",
                   log=f"{work.folder}/ncu-{work.arm}.log", export_argv=export, csv=f"{report}.csv",
                   selection=selection)


# ------------------------------------------------------------------------------------------------ parse
@dataclass(frozen=True)
class NcuLaunch:
    """One profiled kernel launch, in base units."""

    kernel: str
    gpu_time_ns: float
    dram_bytes: float | None
    flop: float | None
    device: str


@dataclass(frozen=True)
class NcuKernelRow:
    """One kernel name over its profiled launches; rates and % of peak from the summed work and time."""

    kernel: str
    launches: int
    gpu_time_us: float
    avg_time_us: float
    dram_gbytes: float | None
    dram_gbps: float | None
    tflop: float | None
    tflops: float | None
    pct_of_copy_bw: float | None
    pct_of_matmul_peak: float | None


def _number(text: str) -> float | None:
    text = (text or "").strip().replace(",", "")
    if text in ("", "n/a", "N/A", "nan"):
        return None
    try:
        return float(text)
    except ValueError:
        return None


def read_raw_csv(text: str) -> tuple[list[str], dict[str, str], list[dict[str, str]]]:
    """(columns, unit per column, one dict per launch) of ncu's raw page; ncu's own ``==PROF==`` lines and
    the application's output before the header are skipped."""
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith('"ID"') and '"Kernel Name"' in line), None)
    if start is None:
        raise WorkbenchError("no ncu raw-page header (\"ID\",...,\"Kernel Name\") in the export: was it written by "
                             "ncu --import REPORT --csv --page raw?")
    kept = [line for line in lines[start:] if not line.startswith("==")]
    rows = list(csv.reader(io.StringIO("\n".join(kept))))
    columns, body = rows[0], [r for r in rows[1:] if len(r) == len(rows[0])]
    units: dict[str, str] = {}
    if body and body[0][columns.index("ID")] == "" and body[0][columns.index("Kernel Name")] == "":
        units = dict(zip(columns, body[0], strict=True))
        body = body[1:]
    return columns, units, [dict(zip(columns, r, strict=True)) for r in body]


def _scaled(row: dict[str, str], units: dict[str, str], name: str, scale: dict[str, float]) -> float | None:
    value = _number(row.get(name, ""))
    if value is None:
        return None
    unit = units.get(name, "")
    return value * scale.get(unit, 1.0)


def launches(text: str) -> list[NcuLaunch]:
    """Each profiled launch of a raw-page export, with its duration, DRAM bytes and FLOPs (None: not collected)."""
    columns, units, rows = read_raw_csv(text)
    if "gpu__time_duration.sum" not in columns:
        raise WorkbenchError("the ncu export has no gpu__time_duration.sum column: profile with the planned --metrics")
    tensor = [c for c in columns if c.startswith("sm__ops_path_tensor_")]
    out = []
    for r in rows:
        time_ns = _scaled(r, units, "gpu__time_duration.sum", _TIME_NS)
        if time_ns is None:
            continue
        parts = [_scaled(r, units, f"dram__bytes_{d}.sum", _BYTES) for d in ("read", "write")]
        total = _scaled(r, units, "dram__bytes.sum", _BYTES)
        dram = total if total is not None else (sum(p for p in parts if p is not None)
                                                if any(p is not None for p in parts) else None)
        flop_parts = [(_number(r.get(f"smsp__sass_thread_inst_executed_op_{op}_pred_on.sum", "")), k)
                      for op, k in _FP_INSTR.items()]
        # The tensor metric may appear under both names (aggregate and sparsity_off): count one of them.
        tensor_ops = next((v for c in sorted(tensor, key=len) if (v := _number(r.get(c, ""))) is not None), None)
        known = [v * k for v, k in flop_parts if v is not None] + ([tensor_ops] if tensor_ops is not None else [])
        out.append(NcuLaunch(kernel=r["Kernel Name"], gpu_time_ns=time_ns, dram_bytes=dram,
                             flop=sum(known) if known else None,
                             device=r.get("device__attribute_display_name", "") or r.get("Device", "")))
    return out


def kernel_rows(found: list[NcuLaunch], peaks: Peaks | None) -> list[NcuKernelRow]:
    """Launches aggregated per kernel name, most GPU time first."""
    by_name: dict[str, list[NcuLaunch]] = defaultdict(list)
    for launch in found:
        by_name[launch.kernel].append(launch)
    rows = []
    for name, ls in by_name.items():
        seconds = sum(x.gpu_time_ns for x in ls) * 1e-9
        dram = sum(x.dram_bytes for x in ls) if all(x.dram_bytes is not None for x in ls) else None
        flop = sum(x.flop for x in ls) if all(x.flop is not None for x in ls) else None
        gbps = dram / seconds / 1e9 if dram is not None and seconds else None
        tflops = flop / seconds / 1e12 if flop is not None and seconds else None
        rows.append(NcuKernelRow(
            kernel=name, launches=len(ls), gpu_time_us=seconds * 1e6, avg_time_us=seconds * 1e6 / len(ls),
            dram_gbytes=None if dram is None else dram / 1e9, dram_gbps=gbps,
            tflop=None if flop is None else flop / 1e12, tflops=tflops,
            pct_of_copy_bw=100.0 * gbps / peaks.copy_gbps if gbps is not None and peaks else None,
            pct_of_matmul_peak=100.0 * tflops / peaks.matmul_tflops if tflops is not None and peaks else None))
    rows.sort(key=lambda r: -r.gpu_time_us)
    return rows


def device_name(found: list[NcuLaunch]) -> str | None:
    """The GPU the launches ran on, when the export carries its display name (not just its index)."""
    names = {x.device for x in found if x.device and not re.fullmatch(r"\d+", x.device)}
    return names.pop() if len(names) == 1 else None


def table_from_export(path: Path, peaks_for) -> tuple[list[NcuKernelRow], Peaks | None, int]:
    """(rows, peaks used, launches) of a raw-page CSV; ``peaks_for(gpu name or None)`` picks the peaks."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        raise WorkbenchError(f"{path} is missing: ncu --import wrote no CSV (see the log beside it)") from None
    found = launches(text)
    if not found:
        raise WorkbenchError(f"{path} holds no profiled launch: the filter matched no kernel (check --arm, "
                             "--kernel-regex, and that the custom arm ran the op in eager mode)")
    peaks = peaks_for(device_name(found))
    return kernel_rows(found, peaks), peaks, len(found)


def log_problem(log_text: str) -> str | None:
    """The fix for what ncu's log says went wrong, when it is a known problem."""
    if "ERR_NVGPUCTRPERM" in log_text:
        return ("ncu may not read the GPU's performance counters (ERR_NVGPUCTRPERM): run it as root, or load the "
                "driver with NVreg_RestrictProfilingToAdminUsers=0; in a container add --cap-add SYS_ADMIN")
    if "No kernels were profiled" in log_text:
        return ("ncu profiled no kernel: the filter matched nothing in the profiled batch (the custom arm needs the "
                "op routed and eager mode; check runs with --kernel-regex .)")
    return None
