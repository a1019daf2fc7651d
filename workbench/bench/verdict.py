"""Judging a session: did the custom kernel run where it should (validity), is the difference beyond
the noise the same engine shows against itself (floors from A/A sessions), and how noisy were the runs.

A verdict needs three things to agree: the Mann-Whitney test, a bootstrap interval of the median ratio,
and a delta larger than the floor measured by an A/A session (both arms the baseline) for the same GPU,
model and mode. Without such a floor the default 2% is used and the summary says so.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from workbench.bench.plan import CONTROL, GEMM_SWITCH, SERVE, BenchSpec, model_slug
from workbench.bench.results import METRICS, MetricDef, RunResult, group
from workbench.bench.stats import MIN_EFFECT_PCT, Comparison, compare, min_repeats_for

FLOORS_FILE = "floors.json"  # in the results root: the floors your own A/A sessions measured
# Floors measured on the GPUs the project was tested on, shipped with the workbench (the same format).
SHIPPED_FLOORS = Path(__file__).with_name("floors.json")
TARGET_EFFECT_PCT = 2.0  # the smallest effect the default run count should be able to resolve
# The most runs per arm (paired: rounds) a default asks for. A paired round of Llama-3-8B costs ~1 minute warm on the
# H200, so 12 rounds is a quarter of an hour; where the measured spread needs more (Qwen2.5-0.5B: ~380), the default
# says which effect its runs can resolve instead of asking for hours.
MAX_DEFAULT_REPEATS = 12
_Z = 1.959964 + 0.841621  # two-sided 5% test, 80% power


@dataclass(frozen=True)
class Validity:
    valid: bool
    reasons: tuple[str, ...]
    fixes: tuple[str, ...]
    custom_calls: tuple[int | None, ...]
    baseline_calls: tuple[int | None, ...]


def missing_ranks(counts: dict[str, Any], tp: int = 1) -> list[int]:
    """The ranks of a tensor-parallel run that made no custom-kernel call: every rank's worker must route, so
    a run at TP=N (or whose dumps name an N-rank group) needs calls from ranks 0..N-1. Empty at TP=1."""
    world = max(tp, int(counts.get("world_size") or 1))
    if world < 2:
        return []
    calls = counts.get("rank_calls") or {}
    return [r for r in range(world) if int(calls.get(str(r), 0)) == 0]


def check_validity(records: Sequence[RunResult], aa: bool = False, tp: int = 1) -> Validity:
    """Valid only if every custom run shows custom-kernel calls — at TP > 1 from every rank's worker process —
    and no baseline (or control) run does (A/A: none anywhere). Each failure maps to its usual cause and fix,
    so INVALID says what to do next."""
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
        fixes.append("the counter hook did not run: the runtime must see the results folder and the workbench's "
                     "guest/hook folder (invoke bench puts it first on PYTHONPATH for each run)")
    dump_errors = sorted({e for r in ok if r.counts for e in r.counts.get("errors", [])})
    if dump_errors:
        reasons.append("counter dump errors: " + "; ".join(dump_errors[:2]))
        fixes.append("install the kernels package where vLLM runs: `invoke install` (pip install -e custom_kernels)")
    expect_calls = [] if aa else custom
    zero_custom = [r for r in expect_calls if r.counts is not None and r.counts["total_calls"] == 0]
    if zero_custom:
        reasons.append(f"{len(zero_custom)} custom run(s) made no custom-kernel call")
        skipped = [r for r in zero_custom if r.counts.get("skipped_layers") and not r.counts.get("routed_layers")]
        if skipped:
            why = "; ".join(skipped[0].counts.get("skip_reasons", []))
            fixes.append(f"the plugin routed no layer ({why}): tune this model's shapes on this GPU (`invoke "
                         f"kernels.tune --model M{f' --tp {tp}' if tp > 1 else ''}`), or route every layer anyway with "
                         "VLLM_CUSTOM_GEMM_ROUTE=all")
        elif all(r.counts["processes_with_custom_kernels"] == 0 for r in zero_custom):
            fixes.append("custom_kernels was never imported by vLLM: apply the GEMM patch (`invoke patch.apply`) "
                         "or install the plugin (`pip install -e custom_kernels`: entry point vllm.general_plugins)")
        else:
            fixes.append(f"custom_kernels loaded but unquantized_gemm never ran: {GEMM_SWITCH}=1 did not reach the "
                         "engine-core process, the patch is not applied to the installed vLLM, or a compile cache "
                         "replayed the baseline graph (try --compile-cache off)")
    partial = [(r, missing_ranks(r.counts, tp)) for r in expect_calls
               if r.counts is not None and r.counts["total_calls"] > 0 and missing_ranks(r.counts, tp)]
    if partial:
        run, ranks = partial[0]
        world = max(tp, int(run.counts.get("world_size") or 1))
        reasons.append(f"{len(partial)} custom run(s) made no custom-kernel call in every rank: {run.run_id} has "
                       f"none from rank(s) {', '.join(map(str, ranks))} of {world} "
                       f"(calls per rank: {run.counts.get('rank_calls') or 'no dump names its rank'})")
        if not run.counts.get("rank_calls"):
            fixes.append("no counter dump says which rank it came from: update custom_kernels where vLLM runs "
                         "(`pip install -e custom_kernels`: its counts_dump.py records the rank)")
        fixes.append("every rank's worker must load the plugin and route: install custom_kernels in the environment "
                     "the workers start in (spawned workers import it afresh), pass the switch to them, and tune "
                     f"the rank's shapes on this GPU (`invoke kernels.tune --model M --tp {world}`)")
    control = [r for r in ok if r.arm == CONTROL]
    hot = [r for r in (custom + baseline + control if aa else baseline + control)
           if r.counts is not None and r.counts["total_calls"] > 0]
    if hot:
        reasons.append(f"{len(hot)} baseline run(s) called the custom kernel")
        fixes.append(f"the GEMM route ignores {GEMM_SWITCH}=0: make the patch/plugin check the switch, or a compile "
                     "cache replayed the custom graph (try --compile-cache off)")
    return Validity(
        valid=not reasons, reasons=tuple(reasons), fixes=tuple(dict.fromkeys(fixes)),
        custom_calls=tuple(r.counts["total_calls"] if r.counts else None for r in custom),
        baseline_calls=tuple(r.counts["total_calls"] if r.counts else None for r in baseline),
    )


def with_gate(validity: Validity, gate: dict[str, Any] | None) -> Validity:
    """The session's validity with the output gate's verdict folded in (no gate: unchanged)."""
    if not gate or gate.get("valid"):
        return validity
    return Validity(False, (*validity.reasons, f"output gate: {gate.get('reason', 'failed')}"),
                    tuple(dict.fromkeys((*validity.fixes, "compare the arms' gate/*.json: a kernel that changes the "
                                         "model's tokens is wrong, whatever its speed"))),
                    validity.custom_calls, validity.baseline_calls)


# --- floors ---------------------------------------------------------------------------------------

def floor_key(gpu: str, model: str, mode: str) -> str:
    return f"{gpu} | {model} | {mode}"


def floor_model(model: str, tp: int) -> str:
    """The model part of a floor's key. Floors are per TP size: the all-reduce share and every rank's engine make a
    TP=2 engine's noise its own."""
    return model_slug(model) + (f" tp{tp}" if tp > 1 else "")


def load_floors(results_root: Path | None) -> dict[str, Any]:
    """Shipped floors, overridden by the ones measured in this results root."""
    floors: dict[str, Any] = {}
    for path in (SHIPPED_FLOORS, (results_root / FLOORS_FILE) if results_root else None):
        if path is not None and path.is_file():
            try:
                floors.update(json.loads(path.read_text()).get("floors", {}))
            except (json.JSONDecodeError, AttributeError):
                continue
    return floors


def floor_for(floors: dict[str, Any], gpu: str, model: str, mode: str, metric: str) -> tuple[float, str]:
    """(floor %, where it comes from) for one metric."""
    entry = floors.get(floor_key(gpu, model, mode))
    if entry and metric in entry.get("metrics", {}):
        return float(entry["metrics"][metric]), f"A/A {entry.get('session', '?')}"
    return MIN_EFFECT_PCT, "default (no A/A session for this GPU, model and mode: run invoke bench --aa)"


def aa_floor(c: Comparison) -> float:
    """What an A/A comparison says identical arms can differ by: the larger of the observed |delta| and
    the farther end of the median ratio's 95% interval, in %."""
    ends = [abs(x - 1.0) * 100.0 for x in c.ratio_ci if math.isfinite(x)]
    return max([abs(c.delta_pct), *ends])


def record_floors(results_root: Path, gpu: str, model: str, session: str,
                  rows: Sequence[tuple[str, Comparison]], paired: dict[str, Any] | None = None,
                  spreads: dict[str, Any] | None = None) -> Path:
    """Write an A/A session's floors into results/floors.json (the verdicts of later A/Bs use them); a paired
    A/A also records the floor of the paired statistic ("paired"), and every mode its spread between runs
    (``between_runs_cv_pct``: what later sessions' default --repeats comes from)."""
    path = results_root / FLOORS_FILE
    data = json.loads(path.read_text()) if path.is_file() else {}
    floors = data.setdefault("floors", {})
    for mode in sorted({m for m, _ in rows}):
        metrics = {c.metric: round(aa_floor(c), 3) for m, c in rows if m == mode}
        if paired and mode in paired:
            metrics["paired"] = paired[mode]["aa_floor_pct"]
        entry = floors[floor_key(gpu, model, mode)] = {"session": session, "metrics": metrics}
        cv = ((spreads or {}).get(mode) or {}).get("pooled_between_runs_cv_pct")
        if cv is not None:
            entry["between_runs_cv_pct"] = round(cv, 3)
    path.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    return path


# --- comparison -----------------------------------------------------------------------------------

def groups(records: Sequence[RunResult]) -> list[tuple[str, str, str, tuple[MetricDef, ...]]]:
    """(mode, point, group key, metrics) of every group the records hold, modes in METRICS order, points in the
    order they ran (latency and throughput have one group each; serve one per load point)."""
    out = []
    for mode, metrics in METRICS.items():
        for point in dict.fromkeys(r.point for r in records if r.mode == mode):
            out.append((mode, point, group(mode, point), metrics))
    return out


def compare_arms(records_a: Sequence[RunResult], records_b: Sequence[RunResult] | None = None,
                 arm_a: str = "baseline", arm_b: str = "custom",
                 floors: dict[str, float] | None = None) -> list[tuple[str, Comparison]]:
    """(group, Comparison) per metric: the group is the mode, or "serve <point>" for each load point. One
    session: baseline vs custom. Two sessions (compare): the ``arm_a`` runs of the first vs the ``arm_b`` runs
    of the second. ``floors``: % per key "group/metric" (the smallest delta that counts)."""
    second = records_a if records_b is None else records_b
    rows: list[tuple[str, Comparison]] = []
    for mode, point, key, metrics in groups(records_a):
        a_runs = [r for r in records_a if r.mode == mode and r.point == point and r.arm == arm_a and r.metrics]
        b_runs = [r for r in second if r.mode == mode and r.point == point and r.arm == arm_b and r.metrics]
        if not a_runs or not b_runs:
            continue
        for m in metrics:
            floor = (floors or {}).get(f"{key}/{m.key}", MIN_EFFECT_PCT)
            rows.append((key, compare(m.key, [r.metrics[m.key] for r in a_runs], [r.metrics[m.key] for r in b_runs],
                                      unit=m.unit, higher_is_better=m.higher_is_better, min_effect_pct=floor)))
    return rows


def runs_needed(cv_pct: float, effect_pct: float = TARGET_EFFECT_PCT) -> int:
    """Runs per arm for a two-sided 5% test with 80% power to see ``effect_pct`` when runs vary by
    ``cv_pct`` (normal approximation: n = 2 (z.975 + z.8)^2 (cv / effect)^2), at least what
    Mann-Whitney needs to be able to reach p < 0.05."""
    n = 2 * _Z ** 2 * (cv_pct / effect_pct) ** 2
    return max(min_repeats_for(), math.ceil(n))


def default_repeats(floors: dict[str, Any], gpu: str, model: str, modes: Sequence[str],
                    fallback: int) -> tuple[int, str]:
    """(runs per arm, why) when --repeats is not given: what a TARGET_EFFECT_PCT effect needs at the spread between
    runs an A/A measured for this GPU, model and mode (the widest of ``modes``), at most MAX_DEFAULT_REPEATS; else
    ``fallback``."""
    measured = [(floors[k]["between_runs_cv_pct"], mode, floors[k].get("session", "?")) for mode in modes
                if isinstance(floors.get(k := floor_key(gpu, model, mode)), dict)
                and floors[k].get("between_runs_cv_pct")]
    if not measured:
        return fallback, f"no A/A spread recorded for {gpu}, {model}: the default {fallback}"
    cv, mode, session = max(measured)
    need = runs_needed(float(cv))
    n = min(need, MAX_DEFAULT_REPEATS)
    why = (f"runs of {model} {mode} on {gpu} vary by {float(cv):.1f}% (A/A {session}): "
           f"a {TARGET_EFFECT_PCT:g}% effect needs ~{need} per arm")
    if need > n:
        why += f"; {n} resolve ~{float(cv) * _Z * math.sqrt(2 / n):.0f}% (pass --repeats to choose)"
    return n, why


def with_default_repeats(spec: BenchSpec, results_root: Path, gpu: str | None) -> tuple[BenchSpec, str]:
    """``spec`` with the runs per arm its GPU's measured A/A spread asks for (default_repeats), and why;
    unchanged, with no reason, for serve (its floors are per load point) or without a GPU to look up."""
    if spec.mode == SERVE or not gpu:
        return spec, ""
    n, why = default_repeats(load_floors(results_root), gpu, floor_model(spec.model, spec.tp), spec.modes,
                             spec.repeats)
    return replace(spec, repeats=n), why


def spread(records: Sequence[RunResult]) -> dict[str, Any]:
    """Where the noise lives, per mode and arm: between runs (CV of the run medians/values) and within a
    run (CV of a latency run's iterations). A between-run spread far above the within-run one points at
    process start, compilation or placement, not at the timed work."""
    out: dict[str, Any] = {}
    for mode, point, name, metrics in groups(records):
        key = metrics[0].key
        per_mode: dict[str, Any] = {}
        for arm in ("baseline", "custom"):
            runs = [r for r in records if r.mode == mode and r.point == point and r.arm == arm and r.metrics]
            if not runs:
                continue
            values = [r.metrics[key] for r in runs]
            within = [_cv(r.samples) for r in runs if len(r.samples) > 1]
            per_mode[arm] = {
                "metric": key, "runs": len(values),
                "between_runs_cv_pct": _cv(values) if len(values) > 1 else None,
                "within_run_cv_pct": statistics.median(within) if within else None,
            }
        cvs = [v["between_runs_cv_pct"] for v in per_mode.values() if v["between_runs_cv_pct"] is not None]
        if cvs:
            pooled = math.sqrt(sum(c * c for c in cvs) / len(cvs))
            per_mode["pooled_between_runs_cv_pct"] = pooled
            per_mode["runs_per_arm_for_2pct"] = runs_needed(pooled)
        if per_mode:
            out[name] = per_mode
    return out


def _cv(values: Sequence[float]) -> float:
    mean = statistics.fmean(values)
    return statistics.stdev(values) / mean * 100.0 if mean else math.nan


def noise_note(rows: Sequence[tuple[str, Comparison]]) -> str:
    """A hint when the run count is too small for the significance test to ever pass."""
    need = min_repeats_for()
    if any(min(c.n_baseline, c.n_custom) < need for _, c in rows):
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
