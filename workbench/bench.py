"""End-to-end A/B of the custom GEMM inside vLLM: plan `vllm bench` runs, read their JSON, judge them.

Pure functions (values in, values out) so the planner, the parsers, the statistics and the validity
check are unit-testable without Docker or a GPU; workbench/tasks/bench.py executes the plan in the
dev container. Arms: ``baseline`` (VLLM_USE_CUSTOM_GEMM=0) and ``custom`` (=1) with identical vLLM
arguments and seed, run in ABBA order so drift (clocks, thermals, co-tenants) hits both arms alike.
"""

from __future__ import annotations

import json
import re
import shlex
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from workbench.errors import WorkbenchError
from workbench.stats import Comparison, compare, median, min_repeats_for

ARMS = ("baseline", "custom")
MODES = ("latency", "throughput")
GEMM_SWITCH = "VLLM_USE_CUSTOM_GEMM"
COUNTS_ENV = "CUSTOM_KERNELS_COUNTS_FILE"
# The dev container mounts the host's results folder here (docker-compose.yml).
CONTAINER_RESULTS = PurePosixPath("/workspace/results")
CONTAINER_SCRIPTS = PurePosixPath("/workspace/scripts")
HOOK_DIR = ".hook"  # per-session folder holding the counter-dump sitecustomize.py


@dataclass(frozen=True)
class BenchSpec:
    """What the user asked for; defaults are small enough for a 0.5B model to finish in minutes."""

    model: str = "Qwen/Qwen2.5-0.5B"
    mode: str = "latency"  # latency | throughput | both
    input_len: int = 128
    output_len: int = 128
    num_prompts: int = 200  # throughput only
    batch_size: int = 8  # latency only
    repeats: int = 5
    tp: int = 1
    seed: int = 0
    extra: tuple[str, ...] = ()
    # Compile cache: vLLM keys it on its *known* env vars only. The patch series registers
    # VLLM_USE_CUSTOM_GEMM (so it changes the key); the plugin route alone does not, and then the custom
    # arm could load the baseline's compiled graph. "off" disables it (both arms
    # recompile, outside the timed region); "per-arm" gives each arm its own VLLM_CACHE_ROOT.
    compile_cache: str = "off"
    # VLLM_CUSTOM_GEMM_LAYERS (the patch series' layer filter, e.g. "model.layers.*.mlp.*"); both arms get it.
    gemm_layers: str = ""

    @property
    def modes(self) -> tuple[str, ...]:
        return MODES if self.mode == "both" else (self.mode,)


def parse_extra(extra: str | None) -> tuple[str, ...]:
    """The --extra string ("--enforce-eager --max-model-len 2048") as argv words."""
    return tuple(shlex.split(extra)) if extra else ()


# Flags the planner sets itself; passing them in --extra would make the two arms disagree with the plan.
_OWNED_FLAGS = {"--model", "--seed", "--output-json", "--input-len", "--output-len", "--batch-size",
                "--num-prompts", "--tensor-parallel-size", "-tp", "--dataset-name"}


def validate_spec(spec: BenchSpec) -> BenchSpec:
    """Check the request; raise WorkbenchError (one line with the fix) on bad input."""
    if spec.mode not in (*MODES, "both"):
        raise WorkbenchError(f"--mode {spec.mode!r} is not one of latency, throughput, both")
    for name in ("input_len", "output_len", "num_prompts", "batch_size", "repeats", "tp"):
        if getattr(spec, name) < 1:
            raise WorkbenchError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(spec, name)}")
    if spec.compile_cache not in ("off", "per-arm"):
        raise WorkbenchError(f"--compile-cache {spec.compile_cache!r} is not one of off, per-arm")
    for word in spec.extra:
        flag = word.split("=", 1)[0]
        if flag in _OWNED_FLAGS:
            raise WorkbenchError(f"--extra must not set {flag}: use the task's own flag for it")
    return spec


def model_slug(model: str) -> str:
    """A folder-safe model name: "Qwen/Qwen2.5-0.5B" -> "Qwen2.5-0.5B"."""
    tail = model.rstrip("/").split("/")[-1] or "model"
    return re.sub(r"[^A-Za-z0-9._-]+", "_", tail)


def session_name(model: str, now: float | None = None) -> str:
    """results/<timestamp>-<model>: UTC, sortable."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(now if now is not None else time.time()))
    return f"{stamp}-{model_slug(model)}"


def vllm_bench_argv(spec: BenchSpec, mode: str, output_json: str) -> list[str]:
    """The exact `vllm bench latency|throughput` command line (vLLM 0.13.0 CLI) for one run."""
    argv = ["vllm", "bench", mode, "--model", spec.model, "--seed", str(spec.seed),
            "--tensor-parallel-size", str(spec.tp), "--input-len", str(spec.input_len),
            "--output-len", str(spec.output_len)]
    if mode == "latency":
        argv += ["--batch-size", str(spec.batch_size)]
    elif mode == "throughput":
        # The random dataset needs no download; --input-len/--output-len fix every request's length.
        argv += ["--dataset-name", "random", "--num-prompts", str(spec.num_prompts)]
    else:
        raise WorkbenchError(f"unknown bench mode {mode!r}: latency or throughput")
    return [*argv, *spec.extra, "--output-json", output_json]


@dataclass(frozen=True)
class PlannedRun:
    """One `vllm bench` invocation: which arm, where its files go, what env it gets."""

    index: int
    mode: str
    arm: str
    repeat: int
    run_id: str
    argv: tuple[str, ...]
    env: dict[str, str]
    output_json: str  # container path
    log: str  # container path
    counts_pattern: str  # container path with {pid}
    hook_dir: str  # container path of the sitecustomize.py counter hook

    def command(self) -> list[str]:
        """The container command: the run, its output tee'd to a log, the run's exit status kept.

        The hook folder goes first on PYTHONPATH (keeping the container's own entries) so its
        sitecustomize.py runs in every Python process of the run, including vLLM's engine core."""
        hook = shlex.quote(self.hook_dir)
        line = (f'set -o pipefail; export PYTHONPATH={hook}${{PYTHONPATH:+:$PYTHONPATH}}; '
                f"{shlex.join(self.argv)} 2>&1 | tee {shlex.quote(self.log)}")
        return ["bash", "-c", line]


def arm_order(repeats: int) -> list[str]:
    """ABBA...: baseline, custom, custom, baseline, baseline, custom, ... (each arm `repeats` times)."""
    order: list[str] = []
    for r in range(repeats):
        order += list(ARMS) if r % 2 == 0 else list(reversed(ARMS))
    return order


def plan_runs(spec: BenchSpec, session: str) -> list[PlannedRun]:
    """Every run of the session, in execution order (per mode: alternating arms, N repeats each)."""
    base = CONTAINER_RESULTS / session
    runs: list[PlannedRun] = []
    for mode in spec.modes:
        seen = {arm: 0 for arm in ARMS}
        for arm in arm_order(spec.repeats):
            repeat = seen[arm]
            seen[arm] += 1
            run_id = f"{mode}-{arm}-r{repeat}"
            out = base / "runs" / f"{run_id}.json"
            env = {
                GEMM_SWITCH: "1" if arm == "custom" else "0",
                COUNTS_ENV: str(base / "runs" / f"{run_id}.counts-{{pid}}.json"),
            }
            if spec.gemm_layers:
                env["VLLM_CUSTOM_GEMM_LAYERS"] = spec.gemm_layers
            if spec.compile_cache == "off":
                env["VLLM_DISABLE_COMPILE_CACHE"] = "1"
            else:
                env["VLLM_CACHE_ROOT"] = f"/tmp/vllm-workbench-cache-{arm}"
            runs.append(PlannedRun(
                index=len(runs), mode=mode, arm=arm, repeat=repeat, run_id=run_id,
                argv=tuple(vllm_bench_argv(spec, mode, str(out))), env=env,
                output_json=str(out), log=str(base / "runs" / f"{run_id}.log"),
                counts_pattern=env[COUNTS_ENV], hook_dir=str(base / HOOK_DIR),
            ))
    return runs


def env_capture_command(session: str) -> list[str]:
    """Container command that writes the session's environment (GPU, versions, fork state) to env.json."""
    return ["python3", str(CONTAINER_SCRIPTS / "bench_env.py"), "--out",
            str(CONTAINER_RESULTS / session / "env.json")]


def host_path(results_root: Path, container_path: str) -> Path:
    """Map a /workspace/results/... path to the host's results folder."""
    rel = PurePosixPath(container_path).relative_to(CONTAINER_RESULTS)
    return results_root / Path(*rel.parts)


# --- the counter-dump hook --------------------------------------------------------------------------

HOOK_SOURCE = '''\
"""Written by `invoke bench`: dump custom_kernels call counters from every Python process of a run.

vLLM V1 runs the model in an engine-core subprocess, so the in-process CALL_COUNTS of the CLI
process say nothing. This file is found through PYTHONPATH, so every process (fork or spawn) loads
it; it writes its counters to $CUSTOM_KERNELS_COUNTS_FILE ({pid} = the process id).
"""
import os
import sys


def _chain_next_sitecustomize():
    # Keep the image's own sitecustomize (if any) working: load the next one on sys.path.
    import importlib.util
    here = os.path.dirname(os.path.abspath(__file__))
    for entry in sys.path:
        if os.path.abspath(entry or ".") == here:
            continue
        candidate = os.path.join(entry or ".", "sitecustomize.py")
        if os.path.isfile(candidate):
            spec = importlib.util.spec_from_file_location("_next_sitecustomize", candidate)
            spec.loader.exec_module(importlib.util.module_from_spec(spec))
            return


def _error_dump(target, message):
    import json
    path = target.replace("{pid}", str(os.getpid()))
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "w") as fh:
        json.dump({"pid": os.getpid(), "error": message, "total_calls": 0, "call_counts": {}}, fh)


def _install():
    target = os.environ.get("CUSTOM_KERNELS_COUNTS_FILE")
    if not target:
        return
    # Load counts_dump.py by file, without importing the custom_kernels package: whether and when vLLM
    # imports it (plugin or patch) must not change; the dump records if it did.
    import importlib.util
    spec = importlib.util.find_spec("custom_kernels")
    if spec is None or not spec.submodule_search_locations:
        _error_dump(target, "custom_kernels is not installed in this Python environment")
        return
    source = os.path.join(list(spec.submodule_search_locations)[0], "counts_dump.py")
    if not os.path.isfile(source):
        _error_dump(target, f"custom_kernels has no counts_dump.py ({source}): update custom_kernels")
        return
    dump_spec = importlib.util.spec_from_file_location("_custom_kernels_counts_dump", source)
    module = importlib.util.module_from_spec(dump_spec)
    sys.modules["_custom_kernels_counts_dump"] = module
    dump_spec.loader.exec_module(module)
    module.install_exit_dump(target)


try:
    _chain_next_sitecustomize()
except Exception:
    pass
try:
    _install()
except Exception as err:  # never break the process; the reader reports the missing or errored dump
    try:
        _error_dump(os.environ["CUSTOM_KERNELS_COUNTS_FILE"], f"counter hook failed: {type(err).__name__}: {err}")
    except Exception:
        pass
'''


def write_hook(session_dir: Path) -> Path:
    """Write results/<session>/.hook/sitecustomize.py (see HOOK_SOURCE) and return its path."""
    hook = session_dir / HOOK_DIR / "sitecustomize.py"
    hook.parent.mkdir(parents=True, exist_ok=True)
    hook.write_text(HOOK_SOURCE)
    return hook


# --- reading results --------------------------------------------------------------------------------

@dataclass(frozen=True)
class MetricDef:
    key: str
    unit: str
    higher_is_better: bool


# What each run contributes to the comparison (one value per run; runs are the independent samples).
METRICS: dict[str, tuple[MetricDef, ...]] = {
    "latency": (MetricDef("p50_s", "s", False), MetricDef("p90_s", "s", False), MetricDef("p99_s", "s", False),
                MetricDef("avg_latency_s", "s", False)),
    "throughput": (MetricDef("tokens_per_second", "tok/s", True), MetricDef("requests_per_second", "req/s", True),
                   MetricDef("elapsed_time_s", "s", False)),
}


def parse_run_json(mode: str, data: dict[str, Any]) -> dict[str, float]:
    """Metrics of one run from the JSON vLLM 0.13.0 writes with --output-json.

    latency.py writes {"avg_latency", "latencies", "percentiles": {10, 25, 50, 75, 90, 99}} (the int
    keys become strings in JSON); throughput.py writes {"elapsed_time", "num_requests",
    "total_num_tokens", "requests_per_second", "tokens_per_second"}.
    """
    try:
        if mode == "latency":
            pct = {str(k): float(v) for k, v in data["percentiles"].items()}
            return {"p50_s": pct["50"], "p90_s": pct["90"], "p99_s": pct["99"],
                    "avg_latency_s": float(data["avg_latency"])}
        if mode == "throughput":
            return {"tokens_per_second": float(data["tokens_per_second"]),
                    "requests_per_second": float(data["requests_per_second"]),
                    "elapsed_time_s": float(data["elapsed_time"])}
    except (KeyError, TypeError, ValueError) as err:
        raise WorkbenchError(f"{mode} result JSON lacks {err}: is it from `vllm bench {mode} --output-json`?") from None
    raise WorkbenchError(f"unknown bench mode {mode!r}: latency or throughput")


def read_counts(files: Iterable[Path]) -> dict[str, Any]:
    """Merge the per-process counter dumps of one run: total calls, per-layer calls, errors."""
    layers: dict[str, int] = {}
    kernels: dict[str, int] = {}
    errors: list[str] = []
    processes = 0
    imported = 0
    for path in sorted(files):
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as err:
            errors.append(f"{path.name}: unreadable ({err})")
            continue
        processes += 1
        if data.get("error"):
            errors.append(str(data["error"]))
        imported += bool(data.get("custom_kernels_imported", False))
        for layer, n in (data.get("call_counts") or {}).items():
            layers[layer] = layers.get(layer, 0) + int(n)
        for per_layer in (data.get("kernel_counts") or {}).values():
            for kernel, n in per_layer.items():
                kernels[kernel] = kernels.get(kernel, 0) + int(n)
    return {"processes": processes, "processes_with_custom_kernels": imported, "total_calls": sum(layers.values()),
            "layers": len(layers), "call_counts": layers, "kernel_counts": kernels, "errors": errors}


@dataclass
class RunResult:
    """One finished (or failed) run as recorded in results/<session>/runs/<run_id>.record.json."""

    run_id: str
    mode: str
    arm: str
    repeat: int
    index: int
    returncode: int
    started: float
    seconds: float
    argv: list[str]
    env: dict[str, str]
    metrics: dict[str, float] = field(default_factory=dict)
    counts: dict[str, Any] | None = None
    error: str = ""


def collect_run(results_root: Path, run: PlannedRun, returncode: int, started: float, seconds: float) -> RunResult:
    """Read one run's output JSON and counter dumps from the host side of the results mount."""
    result = RunResult(run_id=run.run_id, mode=run.mode, arm=run.arm, repeat=run.repeat, index=run.index,
                       returncode=returncode, started=started, seconds=seconds, argv=list(run.argv), env=run.env)
    out = host_path(results_root, run.output_json)
    if returncode != 0:
        result.error = f"vllm bench exited {returncode}; see {out.with_suffix('.log').name}"
    elif not out.is_file():
        result.error = f"no output JSON at {out.name}"
    else:
        try:
            result.metrics = parse_run_json(run.mode, json.loads(out.read_text()))
        except (WorkbenchError, json.JSONDecodeError) as err:
            result.error = str(err)
    pattern = host_path(results_root, run.counts_pattern)
    files = list(pattern.parent.glob(pattern.name.replace("{pid}", "*")))
    result.counts = read_counts(files) if files else None
    return result


def save_record(session_dir: Path, result: RunResult) -> Path:
    path = session_dir / "runs" / f"{result.run_id}.record.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(asdict(result), indent=1))
    return path


def load_records(session_dir: Path) -> list[RunResult]:
    """All run records of a saved session, in execution order."""
    runs_dir = session_dir / "runs"
    if not runs_dir.is_dir():
        raise WorkbenchError(f"{session_dir} has no runs/ folder: pass a results/<timestamp>-<model> folder")
    records = [RunResult(**json.loads(p.read_text())) for p in sorted(runs_dir.glob("*.record.json"))]
    if not records:
        raise WorkbenchError(f"{session_dir} holds no run records (*.record.json): did the bench finish any run?")
    return sorted(records, key=lambda r: r.index)


# --- validity --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Validity:
    valid: bool
    reasons: tuple[str, ...]
    fixes: tuple[str, ...]
    custom_calls: tuple[int | None, ...]
    baseline_calls: tuple[int | None, ...]


def check_validity(records: Sequence[RunResult]) -> Validity:
    """The A/B is valid only if every custom run shows custom-kernel calls and no baseline run does.

    Each failure maps to its usual cause and fix, so an INVALID verdict says what to do next.
    """
    reasons: list[str] = []
    fixes: list[str] = []
    ok = [r for r in records if not r.error]
    failed = [r for r in records if r.error]
    if failed:
        reasons.append(f"{len(failed)} run(s) failed: " + "; ".join(f"{r.run_id}: {r.error}" for r in failed[:3]))
        fixes.append("read the run's .log in runs/; fix the vLLM error, then re-run")
    custom = [r for r in ok if r.arm == "custom"]
    baseline = [r for r in ok if r.arm == "baseline"]
    if not custom or not baseline:
        reasons.append("an arm has no successful run: nothing to compare")
    no_dump = [r for r in ok if r.counts is None]
    if no_dump:
        reasons.append(f"{len(no_dump)} run(s) wrote no counter dump")
        fixes.append("the counter hook did not run: check that results/ is mounted at /workspace/results and "
                     "that PYTHONPATH reaches the container (invoke bench sets it per run)")
    dump_errors = sorted({e for r in ok if r.counts for e in r.counts.get("errors", [])})
    if dump_errors:
        reasons.append("counter dump errors: " + "; ".join(dump_errors[:2]))
        fixes.append("install the kernels package in the container: `invoke install` (pip install -e "
                     "/workspace/custom_kernels)")
    zero_custom = [r for r in custom if r.counts is not None and r.counts["total_calls"] == 0]
    if zero_custom:
        reasons.append(f"{len(zero_custom)} custom run(s) made no custom-kernel call")
        never_imported = all(r.counts["processes_with_custom_kernels"] == 0 for r in zero_custom)
        if never_imported:
            fixes.append("custom_kernels was never imported by vLLM: apply the GEMM patch (`invoke patch apply`) "
                         "or install the plugin (`pip install -e /workspace/custom_kernels`, entry point "
                         "vllm.general_plugins)")
        else:
            fixes.append(f"custom_kernels loaded but unquantized_gemm never ran: {GEMM_SWITCH}=1 did not reach the "
                         "engine-core process, the patch is not applied to the installed vLLM, or a stale "
                         "torch.compile cache replayed the baseline graph (use --compile-cache off)")
    hot_baseline = [r for r in baseline if r.counts is not None and r.counts["total_calls"] > 0]
    if hot_baseline:
        reasons.append(f"{len(hot_baseline)} baseline run(s) called the custom kernel")
        fixes.append(f"the GEMM route ignores {GEMM_SWITCH}=0: make the patch/plugin check the switch, or a stale "
                     "compile cache replayed the custom graph (use --compile-cache off)")
    return Validity(
        valid=not reasons, reasons=tuple(reasons), fixes=tuple(dict.fromkeys(fixes)),
        custom_calls=tuple(r.counts["total_calls"] if r.counts else None for r in custom),
        baseline_calls=tuple(r.counts["total_calls"] if r.counts else None for r in baseline),
    )


# --- comparison ------------------------------------------------------------------------------------

def compare_arms(records_a: Sequence[RunResult], records_b: Sequence[RunResult] | None = None,
                 arm_a: str = "baseline", arm_b: str = "custom") -> list[tuple[str, Comparison]]:
    """(mode, Comparison) per metric. One session: baseline vs custom. Two sessions (--compare): the
    ``arm_a`` runs of the first vs the ``arm_b`` runs of the second."""
    second = records_a if records_b is None else records_b
    rows: list[tuple[str, Comparison]] = []
    for mode, metrics in METRICS.items():
        a_runs = [r for r in records_a if r.mode == mode and r.arm == arm_a and r.metrics]
        b_runs = [r for r in second if r.mode == mode and r.arm == arm_b and r.metrics]
        if not a_runs or not b_runs:
            continue
        for m in metrics:
            rows.append((mode, compare(m.key, [r.metrics[m.key] for r in a_runs], [r.metrics[m.key] for r in b_runs],
                                       unit=m.unit, higher_is_better=m.higher_is_better)))
    return rows


def noise_note(rows: Sequence[tuple[str, Comparison]]) -> str:
    """A hint when the run count is too small for the significance test to ever pass."""
    need = min_repeats_for()
    small = [c for _, c in rows if min(c.n_baseline, c.n_custom) < need]
    if small:
        return f"note: < {need} runs per arm: the Mann-Whitney test cannot reach p < 0.05; use --repeats {need} or more"
    return ""


def summary_dict(rows: Sequence[tuple[str, Comparison]], validity: Validity | None, meta: dict[str, Any]) -> dict:
    """The JSON written to results/<session>/summary.json."""
    return {
        **meta,
        "valid": validity.valid if validity else None,
        "invalid_reasons": list(validity.reasons) if validity else [],
        "fixes": list(validity.fixes) if validity else [],
        "custom_calls": list(validity.custom_calls) if validity else [],
        "baseline_calls": list(validity.baseline_calls) if validity else [],
        "comparisons": [{"mode": mode, **asdict(c)} for mode, c in rows],
        "note": noise_note(rows),
    }


def render_table(rows: Sequence[tuple[str, Comparison]], labels: tuple[str, str] = ("baseline", "custom")):
    """A rich Table: per metric the two medians with IQR and min/max, delta %, p, CI, verdict."""
    from rich.table import Table

    table = Table(title=f"{labels[0]} vs {labels[1]} (median [IQR] (min–max) over runs)")
    for col in ("mode", "metric", labels[0], labels[1], "delta", "p (MWU)", "95% CI ratio", "verdict"):
        table.add_column(col, justify="right" if col not in ("mode", "metric", "verdict") else "left")
    for mode, c in rows:
        table.add_row(mode, f"{c.metric} ({'↑' if c.higher_is_better else '↓'} better)",
                      _fmt_arm(c.baseline_median, c.baseline_iqr, c.baseline_range, c.n_baseline),
                      _fmt_arm(c.custom_median, c.custom_iqr, c.custom_range, c.n_custom),
                      f"{c.delta_pct:+.2f}%", f"{c.p_value:.3f}", f"{c.ratio_ci[0]:.3f}–{c.ratio_ci[1]:.3f}",
                      c.verdict)
    return table


def _fmt(v: float) -> str:
    return f"{v:.4g}"


def _fmt_arm(med: float, iqr: tuple[float, float], rng: tuple[float, float], n: int) -> str:
    return f"{_fmt(med)} [{_fmt(iqr[0])}–{_fmt(iqr[1])}] ({_fmt(rng[0])}–{_fmt(rng[1])}) n={n}"


def plot_chart(records_a: Sequence[RunResult], path: Path, records_b: Sequence[RunResult] | None = None,
               arms: tuple[str, str] = ("baseline", "custom"), labels: tuple[str, str] = ("baseline", "custom"),
               title: str = "") -> Path | None:
    """PNG: per metric, every run as a dot (in execution order) and each arm's median as a bar.

    Returns None when matplotlib is missing (the table and JSON still carry every number)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    second = records_a if records_b is None else records_b
    panels = []
    for mode, metrics in METRICS.items():
        for m in metrics:
            a = [r.metrics[m.key] for r in records_a if r.mode == mode and r.arm == arms[0] and r.metrics]
            b = [r.metrics[m.key] for r in second if r.mode == mode and r.arm == arms[1] and r.metrics]
            if a and b:
                panels.append((mode, m, a, b))
    if not panels:
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3.6), squeeze=False)
    for ax, (mode, m, a, b) in zip(axes[0], panels, strict=True):
        for x, values, color in ((0, a, "tab:gray"), (1, b, "tab:blue")):
            ax.bar(x, median(values), color=color, alpha=0.35, width=0.6)
            ax.scatter([x + (i - (len(values) - 1) / 2) * 0.06 for i in range(len(values))], values,
                       color=color, s=14, zorder=3)
        ax.set_xticks([0, 1], labels=list(labels), fontsize=8)
        ax.set_title(f"{mode}: {m.key}\n({'higher' if m.higher_is_better else 'lower'} is better)", fontsize=8)
        ax.set_ylabel(m.unit, fontsize=8)
        lo = min(min(a), min(b))
        hi = max(max(a), max(b))
        pad = (hi - lo) * 0.5 or abs(hi) * 0.05 or 1.0
        ax.set_ylim(max(0.0, lo - pad), hi + pad)  # zoomed: differences of a few % stay visible
        ax.tick_params(labelsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
