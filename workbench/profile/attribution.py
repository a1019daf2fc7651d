"""An A/B explained kernel by kernel: one profiled generate per arm (torch.profiler traces, e.g. from vLLM's
profiler in the engine-core process) -> GPU time per category, baseline vs custom, and the sum of the
per-category deltas beside the end-to-end delta the session measured.

GEMMs are split by library, and by who launched them: the kernel table (workbench.trace.kernels) names each
kernel's library and category; the CPU ops open on the launching thread say whether the custom op launched it
(its cuBLASLt candidate runs as the ``custom_kernels_cuda::cublaslt_linear`` op; cuBLAS and cuBLASLt kernels
share names, so that is the only way to tell them apart). Kernels of a CUDA-graph replay have no launching op:
under graphs the split is by name only.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from workbench.errors import WorkbenchError
from workbench.profile import gaps
from workbench.trace.kernel_map import KernelIndex
from workbench.trace.kernels import find_trace_files, kernel_table, load_chrome_events, samples_with_callers

OP = "custom_kernels::"  # the custom op (custom_kernels::linear) as the profiler names it
LT_OP = "custom_kernels_cuda::cublaslt"  # its cuBLASLt candidate
LIBRARIES = {"cublas": "cuBLAS", "custom": "custom Triton", "cutlass": "CUTLASS", "vllm-triton": "vLLM Triton",
             "triton-inductor": "Inductor Triton", "aten": "ATen", "vllm-csrc": "vLLM CUDA", "cudnn": "cuDNN"}
# Display order: GEMMs first (by library), then the rest of a decoder step.
ORDER = ("GEMM cuBLAS", "GEMM cuBLAS via op", "GEMM cuBLASLt via op", "GEMM custom Triton", "GEMM CUTLASS")
OP_ITSELF = "custom op (host)"  # a CPU trace: the op's own self time (dispatch, kernel choice), not a kernel
TAIL = ("attention", "norm/activation", "copies", "communication", "other")
# Not summed into the kernel delta: a collective kernel (NCCL, vLLM's custom all-reduce) runs until every rank has
# arrived, so its time holds the other ranks' lateness, not work. At TP=2 on the H200 the baseline's all-reduces
# took 91 ms more than the custom arm's in one profiled generate, while its GEMMs and attention took the same.
WAITS = ("communication",)
ARMS = ("baseline", "custom")


def bucket(category: str, origin: str, callers: tuple[str, ...], name: str) -> str:
    """The attribution category of one sample."""
    if name.startswith((OP, LT_OP)):
        return OP_ITSELF
    in_op = any(c.startswith(OP) for c in callers)
    if any(c.startswith(LT_OP) for c in callers):
        return "GEMM cuBLASLt via op"
    if origin == "custom":
        return "GEMM custom Triton"
    if category == "gemm":
        library = "CUTLASS" if "cutlass" in name.lower() and origin != "cublas" else LIBRARIES.get(origin, origin)
        return f"GEMM {library}" + (" via op" if in_op else "")
    if category == "attention":
        return "attention"
    if category in ("norm", "activation"):
        return "norm/activation"
    if category == "memory" or origin == "cuda-runtime":
        return "copies"
    if category == "communication":
        return "communication"
    return "other"


@dataclass(frozen=True)
class ArmProfile:
    """One arm's profiled GPU time per category (µs over the profiled generate) and its launches."""

    arm: str
    traces: list[str]
    device: str
    gpu_time_us: dict[str, float]
    calls: dict[str, int]
    ranks: int = 1  # trace files, one per rank's worker: their times add up over ranks that run side by side
    idle: gaps.Idle | None = None  # the GPU's waits between kernels (None: a CPU trace)

    @property
    def total_us(self) -> float:
        return sum(self.gpu_time_us.values())


def arm_profile(arm: str, traces: list[Path], index: KernelIndex | None, device: str) -> ArmProfile:
    """Categorised time of one arm's trace files."""
    if not traces:
        raise WorkbenchError(f"no trace files for the {arm} arm: run the profiled generate first "
                             "(invoke profile.attribute SESSION runs it)")
    samples, loaded = [], []
    for path in traces:
        loaded.append(load_chrome_events(path))
        samples += samples_with_callers(loaded[-1], device)
    stats = {s.name: s for s in kernel_table(((n, t) for n, t, _ in samples), index, device)}
    time: dict[str, float] = defaultdict(float)
    calls: dict[str, int] = defaultdict(int)
    for name, us, callers in samples:
        s = stats[name]
        b = bucket(s.category, s.origin, callers, name)
        time[b] += us
        calls[b] += 1
    return ArmProfile(arm, [str(p) for p in traces], device, dict(time), dict(calls), ranks=len(traces),
                      idle=gaps.idle(loaded) if device == "cuda" else None)


@dataclass(frozen=True)
class CategoryRow:
    category: str
    baseline_gpu_time_us: float
    custom_gpu_time_us: float
    delta_us: float  # custom - baseline: > 0, the custom arm spent more time there
    baseline_calls: int
    custom_calls: int


@dataclass
class Attribution:
    rows: list[CategoryRow]
    baseline_gpu_time_us: float
    custom_gpu_time_us: float
    kernel_delta_us: float  # the sum of the per-category deltas, WAITS excluded, over all ranks
    kernel_delta_pct: float  # of the baseline's profiled GPU time (WAITS excluded)
    measured: dict[str, Any] = field(default_factory=dict)  # the session's end-to-end delta, when known
    device: str = "cuda"  # "cpu": the times are CPU operators' self times (a trace without GPU kernels)
    ranks: int = 1
    not_summed: dict[str, float] = field(default_factory=dict)  # WAITS categories' deltas, shown but not summed
    # Per arm, the GPU's idle time inside the profiled generate (gaps.py): the host-side cost no kernel sum sees.
    idle: dict[str, gaps.Idle] = field(default_factory=dict)

    @property
    def what(self) -> str:
        return "GPU time" if self.device == "cuda" else "CPU self time"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def categories(arms: dict[str, ArmProfile]) -> list[str]:
    seen = set().union(*(a.gpu_time_us for a in arms.values()))
    gemm = [c for c in ORDER if c in seen] + sorted(c for c in seen if c.startswith("GEMM") and c not in ORDER)
    return gemm + [c for c in (OP_ITSELF, *TAIL) if c in seen]


def attribute(baseline: ArmProfile, custom: ArmProfile, measured: dict[str, Any] | None = None) -> Attribution:
    """Per-category rows, baseline vs custom, with their summed delta beside the measured one."""
    rows = [CategoryRow(c, baseline.gpu_time_us.get(c, 0.0), custom.gpu_time_us.get(c, 0.0),
                        custom.gpu_time_us.get(c, 0.0) - baseline.gpu_time_us.get(c, 0.0),
                        baseline.calls.get(c, 0), custom.calls.get(c, 0))
            for c in categories({"baseline": baseline, "custom": custom})]
    delta = sum(r.delta_us for r in rows if r.category not in WAITS)
    base = sum(r.baseline_gpu_time_us for r in rows if r.category not in WAITS)
    ranks = max(1, min(baseline.ranks, custom.ranks))
    measured = dict(measured or {})
    if measured.get("baseline_s"):  # ranks run side by side: one rank's share of the delta is the step's
        measured["kernel_delta_pct_of_e2e"] = 100.0 * delta / ranks * 1e-6 / measured["baseline_s"]
    return Attribution(rows, baseline.total_us, custom.total_us, delta, 100.0 * delta / base if base else 0.0,
                       measured, baseline.device, ranks, {r.category: r.delta_us for r in rows if r.category in WAITS},
                       {a.arm: a.idle for a in (baseline, custom) if a.idle is not None})


def measured_delta(session_dir: Path, mode: str) -> dict[str, Any]:
    """What the session measured for one mode: time ratio custom/baseline (paired statistic when there is one,
    else the medians), its delta in %, and the baseline's seconds per generate when the metric gives them."""
    path = session_dir / "summary.json"
    if not path.is_file():
        return {}
    summary = json.loads(path.read_text())
    comps = {c["metric"]: c for c in summary.get("comparisons", []) if c.get("mode") == mode}
    out: dict[str, Any] = {}
    metric = "p50_s" if mode == "latency" else "elapsed_time_s"
    if metric in comps and comps[metric].get("baseline_median"):
        c = comps[metric]
        out = {"baseline_s": c["baseline_median"], "custom_s": c["custom_median"],
               "time_ratio": c["custom_median"] / c["baseline_median"], "source": f"{mode} {metric} medians",
               "verdict": c.get("verdict")}
    paired = (summary.get("paired") or {}).get(mode)
    if paired:
        out.update(time_ratio=paired["time_ratio"], ci95=paired.get("ci95"), verdict=paired.get("verdict"),
                   source=f"{mode} paired rounds (geometric mean of per-round median ratios)")
    if "time_ratio" in out:
        out["delta_pct"] = 100.0 * (out["time_ratio"] - 1.0)
    return out


def session_traces(folder: Path) -> dict[str, list[Path]]:
    """The trace files of each arm under a session's profile folder (<folder>/<arm>/...)."""
    return {arm: find_trace_files(folder / arm) if (folder / arm).is_dir() else [] for arm in ARMS}


def render_chart(result: Attribution, out: Path, title: str) -> Path | None:
    """Stacked bars of GPU time per category, baseline vs custom (None without matplotlib: the `plot` extra)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, ax = plt.subplots(figsize=(6.5, 5))
    bottoms = [0.0, 0.0]
    cmap = plt.get_cmap("tab20")
    for i, row in enumerate(result.rows):
        values = [row.baseline_gpu_time_us / 1e3, row.custom_gpu_time_us / 1e3]
        ax.bar(["baseline", "custom"], values, bottom=bottoms, label=row.category, color=cmap(i % 20), width=0.55)
        bottoms = [b + v for b, v in zip(bottoms, values, strict=True)]
    ax.set_ylabel(f"{result.what} per profiled generate (ms)")
    measured = result.measured.get("delta_pct")
    sub = f"kernels: {result.kernel_delta_pct:+.2f}%" + (f", end to end: {measured:+.2f}%" if measured is not None
                                                          else "")
    ax.set_title(f"{title}\n{sub}", fontsize=10)
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out
