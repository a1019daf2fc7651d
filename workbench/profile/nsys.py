"""Nsight Systems on one arm, with vLLM's documented flags (docs/contributing/profiling.md of vLLM:
``--trace-fork-before-exec=true --cuda-graph-trace=node``, a capture range opened by its CUDA profiler
switch), then ``nsys stats``' kernel summary as a table. Turning the capture into a report can fail where the
capture itself worked (it did on an H200 host): that is one clear line naming the capture that was kept."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

from workbench.errors import WorkbenchError
from workbench.profile.capture import Workload
from workbench.trace.kernel_names import categorize, library_origin

NSYS = "nsys"
KERNEL_REPORT = "cuda_gpu_kern_sum"


@dataclass(frozen=True)
class NsysPlan:
    arm: str
    argv: tuple[str, ...]
    env: dict[str, str]
    report: str  # <folder>/nsys-<arm>.nsys-rep
    log: str
    stats_argv: tuple[str, ...]
    stats_csv: str  # what `nsys stats --format csv --output PREFIX` names the kernel summary


def plan(work: Workload, nsys: str = NSYS) -> NsysPlan:
    """The nsys command for one arm's profiled batch (CUDA graphs traced node by node) and its stats export."""
    prefix = f"{work.folder}/nsys-{work.arm}"
    argv = [nsys, "profile", "--trace=cuda,nvtx,osrt", "--trace-fork-before-exec=true", "--cuda-graph-trace=node"]
    if not work.from_start:
        argv += ["--capture-range=cudaProfilerApi", "--capture-range-end=stop"]
    argv += ["--force-overwrite=true", "--output", prefix, *work.argv]
    stats = (nsys, "stats", "--report", KERNEL_REPORT, "--format", "csv", "--force-export=true",
             "--output", prefix, f"{prefix}.nsys-rep")
    return NsysPlan(arm=work.arm, argv=tuple(argv), env=dict(work.env), report=f"{prefix}.nsys-rep",
                    log=f"{prefix}.log", stats_argv=stats, stats_csv=f"{prefix}_{KERNEL_REPORT}.csv")


@dataclass(frozen=True)
class NsysKernelRow:
    """One kernel name of nsys' kernel summary."""

    kernel: str
    instances: int
    gpu_time_us: float
    avg_time_us: float
    percent: float
    category: str
    origin: str


def kernel_summary(text: str) -> list[NsysKernelRow]:
    """Rows of ``nsys stats --report cuda_gpu_kern_sum --format csv`` (times in ns, as nsys prints them)."""
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if "Total Time (ns)" in line and "Name" in line), None)
    if start is None:
        raise WorkbenchError("no nsys kernel-summary header (\"Time (%)\",\"Total Time (ns)\",...,\"Name\") in the "
                             "export: was it written by nsys stats --report cuda_gpu_kern_sum --format csv?")
    rows = []
    for r in csv.DictReader(io.StringIO("\n".join(lines[start:]))):
        name = r.get("Name") or ""
        if not name:
            continue
        total = float(r["Total Time (ns)"].replace(",", "")) / 1e3
        n = int(float(r["Instances"].replace(",", "")))
        rows.append(NsysKernelRow(kernel=name, instances=n, gpu_time_us=total, avg_time_us=total / max(n, 1),
                                  percent=float(r["Time (%)"].replace(",", "")), category=categorize(name),
                                  origin=library_origin(name) or "unknown"))
    rows.sort(key=lambda x: -x.gpu_time_us)
    return rows


def stats_failure(report: Path, code: int, output: str) -> WorkbenchError:
    """nsys wrote the capture but could not summarise it: say so, and where the capture is."""
    tail = next((line.strip() for line in reversed(output.splitlines()) if line.strip()), "no output")
    kept = f"the capture {report} was kept" if report.is_file() else f"and no capture was written at {report}"
    return WorkbenchError(f"nsys stats could not turn the capture into a report (exit {code}: {tail}); {kept}: "
                          "open it in the Nsight Systems GUI, or run `nsys stats` on it with another nsys version")
