"""What the kernels package measured on a GPU (custom_kernels/bench/results/<gpu>/), read where the workbench needs
it: the ceilings a profiled kernel is measured against (the GEMM benchmark's copy bandwidth and bf16 matmul rate,
gemm_*.json env.peaks; else the GPU's datasheet values, labelled as such), and the op's host time per call
(bench.op_overhead --host, op_host.json), which prices the routed calls vLLM makes outside CUDA graphs."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

# Datasheet (SXM, dense bf16 tensor, HBM bandwidth), used only when no measurement exists.
SPEC = {"NVIDIA H200": (4800.0, 989.0), "NVIDIA H100 80GB HBM3": (3350.0, 989.0)}
BENCH_RESULTS = Path("custom_kernels") / "bench" / "results"


@dataclass(frozen=True)
class Peaks:
    gpu: str
    copy_gbps: float
    matmul_tflops: float
    source: str  # "measured: <file>" or "spec sheet (no measurement for this GPU)"


def measured(root: Path, gpu: str) -> Peaks | None:
    """The peaks the GEMM benchmark recorded for this GPU (matched by the name in each result's env)."""
    for path in sorted((root / BENCH_RESULTS).glob("*/gemm_*.json")):
        try:
            env = json.loads(path.read_text()).get("env", {})
        except (OSError, json.JSONDecodeError):
            continue
        peaks = env.get("peaks") or {}
        # bench.gemm records the device under env.torch; results from before that record it as env.gpu
        ran_on = env.get("gpu") or (env.get("torch") or {}).get("device")
        if ran_on == gpu and peaks.get("copy_gbps") and peaks.get("matmul_tflops"):
            return Peaks(gpu, float(peaks["copy_gbps"]), float(peaks["matmul_tflops"]),
                         f"measured: {path.relative_to(root).as_posix()}")
    return None


def op_host_us(root: Path, gpu: str, registration: str = "direct") -> float | None:
    """The op's host time per call over F.linear as bench.op_overhead --host measured it on this GPU (the op
    registered ``registration``'s way), or None where it was not measured."""
    for path in sorted((root / BENCH_RESULTS).glob("*/op_host.json")):
        try:
            data = json.loads(path.read_text())
            if data.get("device") == gpu:
                return float(data["op_over_F.linear_us"][f"op ({registration})"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return None


def peaks_for(root: Path, gpu: str | None) -> Peaks | None:
    """Measured peaks, else the spec sheet's, else None (an unknown GPU: no % of peak)."""
    if not gpu:
        return None
    found = measured(root, gpu)
    if found:
        return found
    if gpu in SPEC:
        bw, tf = SPEC[gpu]
        return Peaks(gpu, bw, tf, "spec sheet (no measurement for this GPU)")
    return None
