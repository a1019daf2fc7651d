"""The paired driver (``--driver paired``): the arms' engines side by side in one process, iterations
interleaved, fresh engines per round (workbench/guest/engine_ab.py). Its command, its records, and the
statistic it is judged by.

Why it exists: on the H200 host the same `vllm bench` configuration varied by 68% between processes and by
2-9% within one (docs/results/engine_h200/). Interleaving the arms' iterations inside one round cancels
drift; fresh engines per round expose (and average) whatever makes one engine fast or slow.

The statistic: per round, the ratio of the arms' median iteration times; across rounds their geometric mean,
with a two-level bootstrap interval (rounds, then iterations within a round), so an engine-level bias counts
as noise, not as evidence. Every round also runs a control engine (the baseline again): the same statistic
for control/baseline is an A/A measured on the same engines in the same minutes, and an effect counts only
beyond it.
"""

from __future__ import annotations

import json
import math
import random
import shlex
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from workbench.bench import timeline
from workbench.bench.budget import Budget
from workbench.bench.plan import (
    CONTROL,
    COUNTS_ENV,
    HOOK,
    PAIRED_ARMS,
    BenchSpec,
    ModelArgs,
    arm_env,
    hooked_command,
    session_dir,
)
from workbench.bench.results import RunResult, read_counts
from workbench.bench.stats import median, quantile
from workbench.runtime import Places, posix


def command(spec: BenchSpec, mode: str, session: str, places: Places, model: ModelArgs, python: str,
            kernels_digest: str = "", stop_at: float = 0.0) -> tuple[list[str], dict[str, str], str, str]:
    """(command, env, output JSON, log) of one mode's paired run: every round of every arm, none started that would
    end past ``stop_at`` (seconds since the epoch; 0: no deadline)."""
    runs = posix(session_dir(places, session), "runs")
    arms = {arm: {**arm_env(spec, arm, places, kernels_digest),
                  COUNTS_ENV: posix(runs, f"{mode}-{arm}-r{{round}}.counts-{{pid}}.json")} for arm in PAIRED_ARMS}
    out = posix(runs, f"paired-{mode}.json")
    log = posix(runs, f"paired-{mode}.log")
    argv = [python, places.guest_script("engine_ab.py"), "--model", model.model,
            *(["--tokenizer", model.tokenizer] if model.tokenizer else []),
            *(["--load-format", model.load_format] if model.load_format else []),
            "--mode", mode, "--arms", json.dumps(arms, sort_keys=True), "--rounds", str(spec.repeats),
            "--iters", str(spec.iters), "--warmup", str(spec.warmup_iters), "--batch-size", str(spec.batch_size),
            "--num-prompts", str(spec.num_prompts), "--input-len", str(spec.input_len),
            "--output-len", str(spec.output_len), "--seed", str(spec.seed), "--tp", str(spec.tp),
            *(["--stop-at", f"{stop_at:.1f}"] if stop_at else []),
            *(["--pin-cpus"] if spec.pin_cpus else []), *(["--timeline"] if spec.timeline else []),
            "--admission", spec.batch_admission, "--out", out]
    env = {COUNTS_ENV: posix(runs, f"paired-{mode}.frontend.counts-{{pid}}.json")}
    return hooked_command(argv, posix(places.guest, HOOK), log), env, out, log


# What a paired session does after its last round, kept out of --budget-min's rounds so the job still ends with its
# summary. Measured on the H200: records, the table's prediction and the summary ~10 s after the driver's last
# round; the output gate of Qwen2.5-0.5B (its seeded checkpoint, both arms' engines compiling afresh) 262 s. Two
# budgeted sessions there lost their summary to the call's time limit before the deadline counted these.
AFTER_ROUNDS_S = 30.0
GATE_S = 270.0


def deadline(spec: BenchSpec, budget: Budget | None, modes_left: int) -> float:
    """When the paired run of the next mode must have started its last round (seconds since the epoch; 0: no
    budget): the budget's end less what follows the rounds, the modes still to run sharing what is left."""
    if budget is None or budget.limit_s <= 0:
        return 0.0
    now = time.time()
    left = budget.deadline(AFTER_ROUNDS_S + (GATE_S if spec.gate else 0.0)) - now
    return now + max(left, 0.0) / modes_left  # past due: the driver still runs its first round, then stops


def describe(cmd: list[str]) -> str:
    return cmd[-1] if cmd[:2] == ["bash", "-c"] else shlex.join(cmd)


def records(data: dict[str, Any], mode: str, to_host: Callable[[str], Path], counts_dir: Path, argv: list[str],
            env: dict[str, str], returncode: int, started: float, seconds: float,
            first_index: int = 0) -> list[RunResult]:
    """One RunResult per round and arm, so validity, spread and the report read paired sessions as they
    read `vllm bench` ones (a round's iterations are its samples)."""
    out: list[RunResult] = []
    count = int(data.get("count") or 1)
    tokens = count * (int(data.get("input_len") or 0) + int(data.get("output_len") or 0))
    for rnd in data.get("rounds", []):
        k = int(rnd["round"])
        for arm in PAIRED_ARMS:
            times = [float(t) for t in rnd["seconds"].get(arm, [])]
            if not times:
                continue
            if mode == "latency":
                metrics = {"p50_s": quantile(times, 0.5), "p90_s": quantile(times, 0.9),
                           "p99_s": quantile(times, 0.99), "avg_latency_s": sum(times) / len(times)}
            else:
                t = median(times)
                metrics = {"tokens_per_second": tokens / t, "requests_per_second": count / t, "elapsed_time_s": t}
            files = list(counts_dir.glob(f"{mode}-{arm}-r{k}.counts-*.json"))
            out.append(RunResult(
                run_id=f"{mode}-{arm}-r{k}", mode=mode, arm=arm, repeat=k, index=first_index + len(out),
                returncode=returncode, started=started, seconds=float(rnd.get("engine_start_s", {}).get(arm, 0.0)),
                argv=argv, env=env, metrics=metrics, counts=read_counts(files) if files else None, samples=times))
    return out


def how_it_ran(runs: Path, mode: str) -> dict[str, Any]:
    """How the paired run of ``mode`` handed its batches to the engines (engine_ab.py --admission): what it
    asked for became ``admission``, unless an engine could not (``admission_refused``, why). A run from before the
    option streamed, as LLM.generate does. With --timeline, ``timeline``: which step took which request, per arm
    (timeline.summary)."""
    path = runs / f"paired-{mode}.json"
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    out: dict[str, Any] = {"admission": str(data.get("admission", "stream"))}
    if data.get("admission_refused"):
        out["admission_refused"] = str(data["admission_refused"])
    if (stamped := timeline.summary(data)) is not None:
        out["timeline"] = stamped
    return out


def ratio_interval(rounds: Sequence[tuple[Sequence[float], Sequence[float]]], resamples: int = 2000,
                   seed: int = 0) -> tuple[float, float, float]:
    """(geometric mean over rounds of median(B)/median(A), 95% interval) for (A times, B times) per round;
    the interval resamples rounds, then each arm's iterations within a round."""

    def gmean(pairs) -> float:
        logs = [math.log(median(b) / median(a)) for a, b in pairs]
        return math.exp(sum(logs) / len(logs))

    point = gmean(rounds)
    rng = random.Random(seed)
    draws = []
    for _ in range(resamples):
        picked = [rounds[rng.randrange(len(rounds))] for _ in rounds]
        draws.append(gmean([([rng.choice(a) for _ in a], [rng.choice(b) for _ in b]) for a, b in picked]))
    return point, quantile(draws, 0.025), quantile(draws, 0.975)


def _ratio_stats(pairs: Sequence[tuple[Sequence[float], Sequence[float]]]) -> dict[str, Any]:
    ratio, lo, hi = ratio_interval(pairs)
    return {"rounds": len(pairs), "round_ratios": [round(median(b) / median(a), 4) for a, b in pairs],
            "time_ratio": round(ratio, 4), "ci95": [round(lo, 4), round(hi, 4)],
            "aa_floor_pct": round(max(abs(ratio - 1.0), abs(lo - 1.0), abs(hi - 1.0)) * 100.0, 3)}


def analyse(recs: Sequence[RunResult], floors: dict[str, float]) -> dict[str, Any]:
    """Per mode: each round's time ratio custom/baseline, their geometric mean with its interval, and the
    verdict (< 1: the custom arm took less time). Significant only when the interval excludes 1 and the
    effect is beyond both the recorded floor and this session's own control (control/baseline, A/A)."""
    out: dict[str, Any] = {}
    for mode in sorted({r.mode for r in recs}):
        by_round: dict[int, dict[str, list[float]]] = {}
        for r in recs:
            if r.mode == mode and r.samples:
                by_round.setdefault(r.repeat, {})[r.arm] = r.samples
        rounds = [v for _, v in sorted(by_round.items())]
        pairs = [(v["baseline"], v["custom"]) for v in rounds if "baseline" in v and "custom" in v]
        if not pairs:
            continue
        row = {**_ratio_stats(pairs), "iterations_per_arm": [len(a) for a, _ in pairs]}
        control_pairs = [(v["baseline"], v[CONTROL]) for v in rounds if "baseline" in v and CONTROL in v]
        control = _ratio_stats(control_pairs) if control_pairs else None
        floor_pct = max(floors.get(mode, 0.0), control["aa_floor_pct"] if control else 0.0)
        lo, hi = row["ci95"]
        effect = (1.0 - row["time_ratio"]) * 100.0  # % less time in the custom arm
        significant = (hi < 1.0 or lo > 1.0) and abs(effect) >= floor_pct
        row.update(floor_pct=floor_pct, control=control,
                   verdict=("custom faster" if effect > 0 else "custom slower") if significant else "within noise")
        out[mode] = row
    return out
