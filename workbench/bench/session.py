"""Run a planned A/B session through a runtime: model folder, environment capture, the runs in ABBA
order with NVML readings, each run's record, then the verdict, summary.json and chart.png.

Everything that runs goes through ``workbench.runtime.Runtime`` (the dev container or this host);
everything read back goes through its ``to_host``. Tests drive it with the host runtime.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from workbench import models
from workbench.bench import gate, index, paired, plan, report, serve, verdict
from workbench.bench.budget import Budget
from workbench.bench.gpu_sampler import sampling
from workbench.bench.kernels import kernel_env, tp_problem
from workbench.bench.results import (
    RunResult,
    collect_run,
    load_records,
    read_counts,
    read_env,
    save_record,
    vllm_version,
)
from workbench.bench.stats import median
from workbench.errors import WorkbenchError
from workbench.models import KERNELS_PACKAGE
from workbench.profile.peaks import op_host_us
from workbench.runtime import Runtime, discard, posix

StartFn = Callable[[plan.PlannedRun, int, int], None]
# Called after each run: (finished run, its result, runs done, runs total).
DoneFn = Callable[[plan.PlannedRun, RunResult, int, int], None]
SERVE_PLOT = "serve.png"  # serve mode: latency against output throughput, one curve per arm
PREDICTION = "prediction-{mode}.json"  # custom_kernels.predict's output per mode, in the session folder
UNKNOWN_GPU = "unknown GPU"
MODELS = ".models"  # results/.models/<name>-<weights>: model folders made from configs
TOKENIZER = "tokenizer"  # the generated tokenizer's folder inside one (guest/make_model.py)


@dataclass
class SessionOutcome:
    session_dir: Path
    records: list[RunResult]
    rows: list
    validity: verdict.Validity
    summary_path: Path
    chart_path: Path | None
    floors_path: Path | None = None


@dataclass(frozen=True)
class ModelSetup:
    """How the runs see the model, and the folder to complete first when it is made from a config."""

    args: plan.ModelArgs
    config: Path | None = None  # host config.json copied into the folder
    folder_host: Path | None = None
    folder: str | None = None  # the same folder in the runtime
    weights: str = "real"


def model_setup(root: Path, results_root: Path, places_results: str, spec: plan.BenchSpec) -> ModelSetup:
    """A bare config (shipped name or config.json) becomes results/.models/<name>-<weights> with a tokenizer
    (and a seeded checkpoint for --weights random); an HF id or a checkpoint goes to vLLM as it is, unless
    dummy or random weights are asked for and a shipped config matches its name."""
    local = Path(spec.model).expanduser().exists() or "/" not in spec.model
    # An HF id with real weights goes to vLLM as it is; asked for dummy or random weights, its config may
    # come from the shipped ones (a GPU host without a hub).
    config = models.find_config(root, spec.model) if local or spec.weights in ("dummy", "random") else None
    if config is not None and (problem := tp_problem(root, str(config), spec.tp)):
        raise WorkbenchError(problem)  # vLLM would fail in every rank's worker, after minutes of start-up
    if config is not None and models.has_weights(config.parent) and spec.weights in ("auto", "real"):
        config = None  # a checkpoint folder: vLLM reads it as it is
    if config is None:
        if spec.weights == "random":
            raise WorkbenchError(f"--weights random needs a model config (one of {', '.join(models.shipped(root))} "
                                 f"or a config.json), not {spec.model!r}")
        load = "dummy" if spec.weights == "dummy" else None
        return ModelSetup(plan.ModelArgs(spec.model, load), weights=spec.weights if load else "real")
    weights = "dummy" if spec.weights in ("auto", "dummy") else spec.weights
    if weights == "real":
        raise WorkbenchError(f"{spec.model} is a config without weights: use --weights dummy or random")
    name = f"{config.parent.name}-{weights}" + (f"-seed{spec.seed}" if weights == "random" else "")
    folder = posix(places_results, MODELS, name)
    args = plan.ModelArgs(folder, "dummy" if weights == "dummy" else None, posix(folder, TOKENIZER))
    return ModelSetup(args, config, results_root / MODELS / name, folder, weights)


def prepare_model(runtime: Runtime, setup: ModelSetup, seed: int) -> None:
    """Copy the config into the model folder and let the runtime add the tokenizer (and checkpoint)."""
    if setup.config is None or setup.folder_host is None or setup.folder is None:
        return
    setup.folder_host.mkdir(parents=True, exist_ok=True)
    target = setup.folder_host / "config.json"
    if not target.is_file() or target.read_bytes() != setup.config.read_bytes():
        shutil.copyfile(setup.config, target)
        (setup.folder_host / ".workbench-model.json").unlink(missing_ok=True)
    out: list[bytes] = []
    rc = runtime.run([runtime.python, runtime.places.guest_script("make_model.py"), setup.folder,
                      "--weights", setup.weights, "--seed", str(seed)], cwd=runtime.places.results,
                     out=out.append, err=out.append)
    if rc != 0:
        tail = b"".join(out).decode(errors="replace").strip().splitlines()[-1:] or ["(no output)"]
        raise WorkbenchError(f"could not complete the model folder {setup.folder_host} (exit {rc}: {tail[0]}): "
                             "the runtime's Python needs tokenizers (and torch + transformers for --weights random)")


def kernels_digest(root: Path) -> str:
    """A digest of the kernels package's code and tables: the custom arm's compiled graph depends on them."""
    package = root / KERNELS_PACKAGE
    h = hashlib.sha256()
    for path in sorted(p for p in package.rglob("*") if p.suffix in (".py", ".json", ".cpp") and p.is_file()):
        h.update(path.relative_to(package).as_posix().encode())
        h.update(path.read_bytes())
    return h.hexdigest()


def installed_throughput_flags(session_dir: Path) -> frozenset[str]:
    """The throughput flags the env capture found in the installed vLLM; unknown: the fork's release decides."""
    env = read_env(session_dir)
    flags = env.get("vllm_bench_flags")
    if isinstance(flags, dict) and isinstance(flags.get("throughput"), list):
        return frozenset(flags["throughput"])
    return plan.throughput_flags_for(vllm_version(env))


def write_plan(session_dir: Path, spec: plan.BenchSpec, runs: Sequence[plan.PlannedRun | serve.PlannedServeRun],
               runtime: str) -> Path:
    """results/<session>/plan.json: the spec and every command line, before anything runs."""
    session_dir.mkdir(parents=True, exist_ok=True)
    path = session_dir / "plan.json"
    path.write_text(json.dumps({"spec": asdict(spec), "runtime": runtime, "runs": [asdict(r) for r in runs]},
                               indent=1))
    return path


def run_session(runtime: Runtime, root: Path, session: str, spec: plan.BenchSpec,
                on_start: StartFn | None = None, on_done: DoneFn | None = None, quiet: bool = True,
                sample_gpu: bool = True) -> SessionOutcome:
    """Run every planned run in order, save each run's record, then judge and summarize the session."""
    budget = Budget(spec.budget_min)  # the job's clock: the env capture and the model folder count too
    places = runtime.places
    results_root = runtime.to_host(places.results)
    session_dir = results_root / session
    (session_dir / "runs").mkdir(parents=True, exist_ok=True)
    setup = model_setup(root, results_root, places.results, spec)
    sink = {"out": discard, "err": discard} if quiet else {}
    # The results folder as the working folder: the checkout's root would put its vllm/ and custom_kernels/
    # folders first on sys.path of `python -m`, shadowing the installed packages.
    rc = runtime.run(plan.env_capture_command(places, session, runtime.python), cwd=places.results, **sink)
    if rc != 0:
        (session_dir / "env.json").write_text(json.dumps({"error": f"bench_env.py exited {rc}"}))
    if spec.mode == plan.SERVE:
        served = serve.plan_runs(spec, session, places, setup.args, runtime.python, kernels_digest(root))
        write_plan(session_dir, spec, served, runtime.describe())
    else:
        runs = plan.plan_runs(spec, session, places, setup.args, runtime.python, kernels_digest(root),
                              installed_throughput_flags(session_dir))
        write_plan(session_dir, spec, runs, runtime.describe())
    prepare_model(runtime, setup, spec.seed)
    if spec.mode == plan.SERVE:
        records = run_serve(runtime, session_dir, served, sink, on_start, on_done, sample_gpu, budget)
    elif spec.driver == "paired":
        records = run_paired(runtime, root, session_dir, spec, setup, sink, on_done, sample_gpu, budget)
    else:
        records = run_cli(runtime, session_dir, runs, sink, on_start, on_done, sample_gpu, budget)
    if not all(r.error for r in records):
        run_prediction(runtime, root, session_dir, spec, setup, sink)
    if spec.gate and not all(r.error for r in records):
        run_gate(runtime, root, results_root, session_dir, spec, setup, sink)
    meta = {"spec": asdict(spec), "runtime": runtime.describe(), "model_weights": setup.weights}
    if budget.skipped:
        meta["budget"] = {"minutes": spec.budget_min, "runs_not_started": budget.skipped}
    outcome = summarize_session(session_dir, records, meta, results_root=results_root, aa=spec.aa)
    # Only a session that ran ends up in the index: summarize_session alone also re-reads saved ones.
    index.append(results_root, index.entry(session, json.loads(outcome.summary_path.read_text())))
    return outcome


def run_cli(runtime: Runtime, session_dir: Path, runs: Sequence[plan.PlannedRun], sink: dict,
            on_start: StartFn | None, on_done: DoneFn | None, sample_gpu: bool,
            budget: Budget | None = None) -> list[RunResult]:
    """Every planned `vllm bench` run in order, each one's record saved; stops early when both arms fail, or
    before a run the budget has no time for."""
    records: list[RunResult] = []
    for i, run in enumerate(runs):
        if budget is not None and not budget.allows(run.arm, len(runs) - i):
            break
        if on_start:
            on_start(run, i, len(runs))
        started = time.time()
        with sampling(sample_gpu) as gpu:
            rc = runtime.run(run.command(), dict(run.env), cwd=runtime.places.results, **sink)
        result = collect_run(runtime.to_host, run, rc, started, time.time() - started)
        result.gpu = gpu
        save_record(session_dir, result)
        records.append(result)
        if budget is not None:
            budget.done(run.arm, result.seconds)
        if on_done:
            on_done(run, result, i + 1, len(runs))
        if len(records) >= 2 and all(r.error for r in records):
            break  # both arms fail from the start (bad model, out of memory, no GPU): don't repeat it N times
    return records


def run_serve(runtime: Runtime, session_dir: Path, runs: Sequence[serve.PlannedServeRun], sink: dict,
              on_start: StartFn | None, on_done: DoneFn | None, sample_gpu: bool,
              budget: Budget | None = None) -> list[RunResult]:
    """Every planned server run in order (arms ABBA), one record per load point. The guest (serve_run.py) owns the
    server; after Ctrl-C or any other exception here it is also stopped from outside, since a docker exec does not
    pass the signal on. A server that could not serve (port taken, exited, never healthy) stops the session with
    one line naming its log."""
    places = runtime.places
    records: list[RunResult] = []
    total = sum(len(r.points) for r in runs)
    for i, run in enumerate(runs):
        if budget is not None and not budget.allows(run.arm, len(runs) - i):
            break
        if on_start:
            on_start(run, i, len(runs))
        serve.write_run_file(runtime.to_host, run)
        started = time.monotonic()
        try:
            with sampling(sample_gpu) as gpu:
                rc = runtime.run(run.command(runtime.python, places), dict(run.env), cwd=places.results, **sink)
        except BaseException:
            with contextlib.suppress(Exception):  # the first failure is the one to report
                runtime.run(run.stop_command(runtime.python, places), cwd=places.results, out=discard, err=discard)
            raise
        status = serve.read_status(runtime.to_host(run.status))
        if (status.get("error") or {}).get("kind") == "interrupted":
            # The guest stopped on Ctrl-C (or a stop from outside) and stopped its server: an interruption however
            # this process saw it, whether its own KeyboardInterrupt came first or the guest's exit did.
            raise KeyboardInterrupt
        error = serve.server_error(status, rc, runtime.to_host(run.server_log), runtime.describe())
        if error is not None:
            raise error
        if budget is not None:
            budget.done(run.arm, time.monotonic() - started)  # the server's start and every load point
        mine = serve.collect(runtime.to_host, run, status, first_index=len(records))
        for point, result in zip(run.points, mine, strict=True):
            result.gpu = gpu
            save_record(session_dir, result)
            records.append(result)
            if on_done:
                on_done(point, result, len(records), total)
        if i >= 1 and all(r.error for r in records):
            break  # both arms' servers fail at every point (bad model, a client error): don't repeat it N times
    return records


def run_paired(runtime: Runtime, root: Path, session_dir: Path, spec: plan.BenchSpec, setup: ModelSetup,
               sink: dict, on_done: DoneFn | None, sample_gpu: bool, budget: Budget | None = None) -> list[RunResult]:
    """One paired run per mode (all rounds of every arm's engine), read back as a record per round and arm."""
    records: list[RunResult] = []
    for i, mode in enumerate(spec.modes):
        cmd, env, out, _ = paired.command(spec, mode, session_dir.name, runtime.places, setup.args, runtime.python,
                                          kernels_digest(root), paired.deadline(spec, budget, len(spec.modes) - i))
        started = time.time()
        with sampling(sample_gpu) as gpu:
            rc = runtime.run(cmd, env, cwd=runtime.places.results, **sink)
        seconds = time.time() - started
        data_file = runtime.to_host(out)
        data = json.loads(data_file.read_text()) if data_file.is_file() else {}
        mine = paired.records(data, mode, runtime.to_host, session_dir / "runs", cmd, env, rc, started, seconds,
                              first_index=len(records))
        # A driver stopped mid-way (its output is rewritten after each round) keeps its finished rounds: each is
        # a whole measurement of every arm; the records carry the exit status.
        if not mine:
            mine = [RunResult(run_id=f"{mode}-{arm}-r0", mode=mode, arm=arm, repeat=0, index=len(records) + i,
                              returncode=rc, started=started, seconds=seconds, argv=cmd, env=env,
                              error=f"the paired driver exited {rc}; see runs/paired-{mode}.log")
                    for i, arm in enumerate(plan.PAIRED_ARMS)]
        for result in mine:
            result.gpu = gpu
            save_record(session_dir, result)
        records += mine
        if on_done:
            for result in mine:
                on_done(None, result, len(records), len(spec.modes) * len(plan.PAIRED_ARMS) * spec.repeats)
        if all(r.error for r in records):
            break
    return records


def run_prediction(runtime: Runtime, root: Path, session_dir: Path, spec: plan.BenchSpec, setup: ModelSetup,
                   sink: dict) -> None:
    """What the dispatch table predicts each mode gains (custom_kernels.predict), to judge the measurement by,
    with the op's measured host cost per call where this GPU has one; none for a model without a config folder or
    on a GPU the environment capture did not name."""
    gpu = _gpu_name(read_env(session_dir))
    if setup.folder is None or gpu == UNKNOWN_GPU:
        return
    host_us = op_host_us(root, gpu, os.environ.get("CUSTOM_KERNELS_OP") or "direct")
    places = runtime.places
    for mode in (m for m in spec.modes if m in plan.MODES):  # the table predicts offline generate calls only
        cmd = [runtime.python, "-m", "custom_kernels.predict", "--model", posix(setup.folder, "config.json"),
               "--gpu", gpu, "--mode", mode, "--batch-size", str(spec.batch_size), "--num-prompts",
               str(spec.num_prompts), "--input-len", str(spec.input_len), "--output-len", str(spec.output_len),
               "--tp", str(spec.tp), "--out", posix(places.results, session_dir.name, PREDICTION.format(mode=mode)),
               *(["--host-us", f"{host_us:g}"] if host_us is not None else [])]
        runtime.run(cmd, env=kernel_env(places.kernels_import_root), cwd=places.results, **sink)


def prediction_beside(session_dir: Path, records: Sequence[RunResult], spec: dict[str, Any]) -> dict[str, Any]:
    """Per mode: the table's saved GEMM time over the baseline's measured time per generate, as the time
    ratio custom/baseline it predicts (to read beside the measured one)."""
    out: dict[str, Any] = {}
    for mode in plan.MODES:
        path = session_dir / PREDICTION.format(mode=mode)
        base = [r for r in records if r.mode == mode and r.arm == "baseline" and r.metrics and not r.error]
        if not path.is_file() or not base:
            continue
        pred = json.loads(path.read_text())
        if not pred.get("gemm_s_cublas"):
            continue  # the table holds no timings for this model on this GPU: nothing to predict from
        if mode == "latency":
            seconds = median([r.metrics["p50_s"] for r in base])
        else:
            tokens = int(spec.get("num_prompts", 0)) * (int(spec.get("input_len", 0)) + int(spec.get("output_len", 0)))
            seconds = median([r.metrics.get("elapsed_time_s") or tokens / r.metrics["tokens_per_second"]
                              for r in base])
        out[mode] = {"baseline_s": seconds, "gemm_s_cublas": pred["gemm_s_cublas"], "saved_s": pred["saved_s"],
                     "gemm_share": pred["gemm_s_cublas"] / seconds, "time_ratio": (seconds - pred["saved_s"]) / seconds,
                     **{k: pred.get(k) for k in ("dtype", "untimed_shapes", "winners_priced_by")}}
        if pred.get("host_s") is not None:  # the op's host time outside CUDA graphs: a bound, where the host is one
            out[mode].update({k: pred[k] for k in ("host_s", "routed_calls_outside_graphs")},
                             time_ratio_with_host=(seconds - pred["saved_s"] + pred["host_s"]) / seconds)
    return out


def run_gate(runtime: Runtime, root: Path, results_root: Path, session_dir: Path, spec: plan.BenchSpec,
             setup: ModelSetup, sink: dict) -> dict[str, Any]:
    """The output gate after the timed runs: each arm through engine_gate.py on weights at a realistic scale
    (a config gets its seeded random checkpoint), compared; the verdict lands in gate/result.json."""
    places = runtime.places
    model = plan.ModelArgs(spec.model)
    if setup.config is not None:
        gate_setup = model_setup(root, results_root, places.results, replace(spec, weights="random"))
        prepare_model(runtime, gate_setup, spec.seed)
        model = gate_setup.args
    (session_dir / plan.GATE).mkdir(parents=True, exist_ok=True)
    outputs: dict[str, dict] = {}
    calls: dict[str, int] = {}
    failed = []
    for arm, cmd, env in plan.gate_runs(spec, session_dir.name, places, model, runtime.python,
                                        kernels_digest(root)):
        rc = runtime.run(cmd, env, cwd=places.results, **sink)
        out = session_dir / plan.GATE / f"{arm}.json"
        if rc != 0 or not out.is_file():
            failed.append(f"{arm} exited {rc} (see gate/{arm}.log)")
            continue
        outputs[arm] = json.loads(out.read_text())
        calls[arm] = read_counts((session_dir / plan.GATE).glob(f"{arm}.counts-*.json"))["total_calls"]
    if failed:
        result: dict[str, Any] = {"valid": False, "reason": "the gate could not run: " + "; ".join(failed)}
    else:
        result = gate.compare_outputs(outputs["baseline"], outputs["custom"]).to_dict()
        if not spec.aa and calls.get("custom", 0) == 0:
            result.update(valid=False, reason="the custom arm of the gate made no custom-kernel call: it compared "
                                              "the baseline with itself")
    result.update({"model": model.model, "custom_kernel_calls": calls})
    (session_dir / plan.GATE / "result.json").write_text(json.dumps(result, indent=1))
    return result


def _gpu_name(env: dict[str, Any]) -> str:
    torch_info = env.get("torch") if isinstance(env.get("torch"), dict) else {}
    return str(torch_info.get("device") or UNKNOWN_GPU)


def summarize_session(session_dir: Path, records: Sequence[RunResult], meta: dict[str, Any] | None = None,
                      results_root: Path | None = None, aa: bool = False) -> SessionOutcome:
    """Validity, floors and comparison of one session's records; writes summary.json and chart.png (serve mode:
    serve.png) (an A/A session also records its floors in results/floors.json)."""
    meta = {"session": session_dir.name, **(meta or {})}
    env = meta["env"] = read_env(session_dir)
    aa = aa or bool(meta.get("spec", {}).get("aa"))
    gate_file = session_dir / plan.GATE / "result.json"
    gate_result = json.loads(gate_file.read_text()) if gate_file.is_file() else None
    if gate_result is None and meta.get("spec", {}).get("gate") and any(not r.error for r in records):
        gate_result = {"valid": False, "reason": "no gate result: the session stopped before the output gate finished"}
    tp = int(meta.get("spec", {}).get("tp") or 1)
    validity = verdict.with_gate(verdict.check_validity(records, aa=aa, tp=tp), gate_result)
    gpu = _gpu_name(env)
    model = verdict.floor_model(str(meta.get("spec", {}).get("model", "model")), tp)
    floors = verdict.load_floors(results_root)
    used: dict[str, float] = {}
    sources: dict[str, str] = {}
    for _, _, key, metrics in verdict.groups(records):
        for m in metrics:
            used[f"{key}/{m.key}"], sources[key] = verdict.floor_for(floors, gpu, model, key, m.key)
    if aa:
        used = {}  # an A/A session measures the floor; judging it against one would be circular
    rows = verdict.compare_arms(records, floors=used)
    paired_stats = None
    if meta.get("spec", {}).get("driver") == "paired":
        paired_floors = {mode: 0.0 if aa else verdict.floor_for(floors, gpu, model, mode, "paired")[0]
                         for mode in plan.MODES}
        paired_stats = paired.analyse(records, paired_floors)
        for mode, row in paired_stats.items():
            row.update(paired.how_it_ran(session_dir / "runs", mode))
    floors_path = None
    spreads = verdict.spread(records)
    if aa and validity.valid and rows and results_root is not None:
        floors_path = verdict.record_floors(results_root, gpu, model, session_dir.name, rows, paired_stats, spreads)
    summary = verdict.summary_dict(rows, validity, meta)
    summary.update({"gpu": gpu, "aa": aa, "floor_sources": {} if aa else sources,
                    "spread": spreads, "gate": gate_result, "paired": paired_stats,
                    "prediction": prediction_beside(session_dir, records, meta.get("spec", {}))})
    labels = ("A", "A again") if aa else ("baseline", "custom")
    title = f"{session_dir.name}: {'A/A ' if aa else ''}{'VALID' if validity.valid else 'INVALID'}"
    if any(r.mode == plan.SERVE for r in records):
        chart = report.plot_serve(records, session_dir / SERVE_PLOT, dict(zip(plan.ARMS, labels, strict=True)), title)
        summary["serve"] = report.serve_section(serve.per_arm_medians(records), chart)
    else:
        chart = report.plot_chart(records, session_dir / "chart.png", labels=labels, title=title)
    summary_path = session_dir / "summary.json"
    summary_path.write_text(json.dumps(summary, indent=1, default=str))
    return SessionOutcome(session_dir, list(records), rows, validity, summary_path, chart, floors_path)


def compare_sessions(dir_a: Path, dir_b: Path, out_dir: Path | None = None,
                     arm: str = "custom") -> tuple[list, Path | None, list[verdict.Validity]]:
    """bench.compare: the ``arm`` runs of two saved sessions (e.g. two kernel versions), plus each one's validity."""
    for d in (dir_a, dir_b):
        if not d.is_dir():
            raise WorkbenchError(f"{d} is not a folder: pass two results/<timestamp>-<model> folders")
    a, b = load_records(dir_a), load_records(dir_b)
    rows = verdict.compare_arms(a, b, arm_a=arm, arm_b=arm)
    if not rows:
        raise WorkbenchError(f"{dir_a.name} and {dir_b.name} share no mode with successful '{arm}' runs to compare")
    chart = None
    if out_dir is not None:
        chart = report.plot_chart(a, out_dir / f"compare-{dir_a.name}-vs-{dir_b.name}.png", records_b=b,
                                  arms=(arm, arm), labels=(dir_a.name[:15], dir_b.name[:15]),
                                  title=f"{arm}: {dir_a.name} vs {dir_b.name}")
    return rows, chart, [verdict.check_validity(a), verdict.check_validity(b)]
