"""`invoke bench` (= bench.ab): the end-to-end A/B of the custom GEMM in vLLM; bench.compare: two saved
sessions; bench.export: a session as CSV; bench.proxy: the model-level decode proxy. Logic: workbench/bench/."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

from invoke import Collection, task
from rich.console import Console
from rich.markup import escape

from workbench import flags, ui
from workbench.bench import plan as benchplan
from workbench.bench import serve
from workbench.config import settings_from_context
from workbench.errors import WorkbenchError
from workbench.tasks.runtimes import plan_places

AB_HELP = {
    "custom_gemm": "the A/B of the custom GEMM (what bench.ab does; accepted for the old `invoke bench --custom-gemm`)",
    "model": "HF id or checkpoint as vLLM takes it, or a model config (shipped name like qwen2.5-0.5b, or a "
             "config.json): a config runs with a generated tokenizer and --weights; default Qwen/Qwen2.5-0.5B",
    "mode": "latency (p50/p90/p99 of one batch), throughput (tokens/s), both, or serve (`vllm serve` per arm, "
            "`vllm bench serve` at each load point: TTFT/TPOT/ITL and output tokens/s)",
    "input_len": "prompt tokens per request (default 128)",
    "output_len": "generated tokens per request (default 128)",
    "num_prompts": "requests per throughput run, and per load point in serve mode (default 200)",
    "batch_size": "requests per latency batch (default 8)",
    "repeats": "runs per arm (paired: rounds; >= 4 for the significance test to be able to pass). Default: what a "
               "2% effect needs at the spread an A/A measured on this GPU for this model and mode (shipped H200 "
               "floors, or your --aa sessions'), at most 12; else 5",
    "iters": "latency: timed iterations per run (default 30)",
    "warmup_iters": "latency: warm-up iterations per run, not timed; serve: warm-up requests per load point "
                    "(default 5)",
    "tp": "tensor-parallel size (default 1)",
    "extra": "more `vllm bench` arguments (serve: `vllm serve` arguments), same for both arms, e.g. "
             "\"--enforce-eager --max-model-len 2048\"",
    "request_rates": "serve: the load points as request rates per second, Poisson arrivals, e.g. 1,4,inf",
    "concurrencies": "serve: the load points as max concurrencies, all requests sent at once (default 1,8,32)",
    "port": "serve: the server's port (default: a free one); a port in use is an error",
    "server_timeout": "serve: seconds to wait for the server's /health before giving up (default 600)",
    "pin_cpus": "paired: each arm's engine (engine core and workers) on CPUs of its own, the driver on others "
                "(needs arms + 1 shares of the CPUs it may use)",
    "admission": "paired: whole (default: each timed batch reaches the scheduler at once, so every iteration steps "
                 "the same batches) or stream (request by request, as `vllm bench` and LLM.generate)",
    "timeline": "paired: stamp every timed request (when it reached the engine core, which engine step took it) and "
                "report each arm's batch cuts and what they cost; vLLM's request stats run in every arm alike",
    "point_timeout": "serve: seconds one load point may run before the server is taken to hang and the run stops "
                     "(default 1800)",
    "compile_cache": "per-arm (default: a VLLM_CACHE_ROOT per arm, repeats skip compilation), shared (one root: "
                     "vLLM's cache key tells the arms apart) or off (VLLM_DISABLE_COMPILE_CACHE=1, every run compiles)",
    "gate": "the output gate (default on; --no-gate skips it): after the timed runs both arms generate greedily "
            "from a seeded prompt set on weights at a realistic scale; different tokens make the A/B INVALID",
    "gemm_layers": "only these layers use the custom GEMM (VLLM_CUSTOM_GEMM_LAYERS globs, e.g. \"*.mlp.*,!*.o_proj\")",
    "aa": "A/A: both arms run the baseline; its spread becomes the floor later verdicts use (results/floors.json)",
    "driver": "cli (default: each run a `vllm bench` process, arms in ABBA order) or paired (one process holds "
              "the engines of both arms and a control (the baseline again) and interleaves their iterations; "
              "--repeats rounds of fresh engines)",
    "budget_min": "start no run (paired: no round; serve: no server) that would end past this many minutes; the "
                  "finished ones are judged (for jobs under a time limit; default no limit)",
    "weights": "auto (default: real for an HF id, dummy for a config), dummy (vLLM --load-format dummy), random "
               "(a seeded checkpoint at the model's init scale, written once from the config), real",
    "runtime": "docker (the dev container) or host (this machine's workbench.python); default workbench.runtime",
    "verbose": "stream vLLM's output while it runs (it is always saved to results/<session>/runs/*.log)",
    "dry_run": "print the plan (every command line and env) and exit without running anything",
}


def _int(flag: str, value, default: int, minimum: int) -> int:
    number = flags.integer(flag, value, minimum=minimum, example=str(default))
    return default if number is None else number


def _print_setup(console, setup, places, session: str, python: str) -> None:
    """The plan's lines every mode shares: the model folder made for it, and the environment capture."""
    if setup.folder:
        console.print(f"  model folder: {setup.folder} ({setup.weights} weights, tokenizer made for the config)",
                      soft_wrap=True)
    console.print(f"  env capture: {shlex.join(benchplan.env_capture_command(places, session, python))}",
                  soft_wrap=True, markup=False)


@task(help=AB_HELP, auto_shortflags=False, default=True)
def ab(c, custom_gemm=True, model=None, mode="latency", input_len=None, output_len=None, num_prompts=None,
       batch_size=None, repeats=None, iters=None, warmup_iters=None, tp=None, extra="", compile_cache="per-arm",
       gemm_layers="", aa=False, weights="auto", gate=True, driver="cli", budget_min=None, pin_cpus=False,
       admission="", timeline=False, request_rates=None, concurrencies=None, port=None, server_timeout=None,
       point_timeout=None, runtime=None, verbose=False, dry_run=False):
    """A/B the custom GEMM in the real vLLM: `vllm bench` with VLLM_USE_CUSTOM_GEMM=0 vs =1, alternating."""
    d = benchplan.BenchSpec()
    spec = benchplan.validate_spec(benchplan.BenchSpec(
        model=model or d.model, mode=mode, input_len=_int("--input-len", input_len, d.input_len, 1),
        output_len=_int("--output-len", output_len, d.output_len, 1),
        num_prompts=_int("--num-prompts", num_prompts, d.num_prompts, 1),
        batch_size=_int("--batch-size", batch_size, d.batch_size, 1),
        repeats=_int("--repeats", repeats, d.repeats, 1), iters=_int("--iters", iters, d.iters, 1),
        warmup_iters=_int("--warmup-iters", warmup_iters, d.warmup_iters, 0), tp=_int("--tp", tp, d.tp, 1),
        extra=benchplan.parse_extra(extra), compile_cache=compile_cache, gemm_layers=gemm_layers, aa=aa,
        weights=weights, gate=gate, driver=driver,
        budget_min=flags.real("--budget-min", budget_min, minimum=0, example="9") or 0.0, pin_cpus=bool(pin_cpus),
        admission=admission, timeline=bool(timeline), request_rates=serve.parse_rates(request_rates),
        concurrencies=serve.parse_concurrencies(concurrencies),
        port=_int("--port", port, d.port, 0),
        server_timeout_s=flags.real("--server-timeout", server_timeout, above=0, example="900") or d.server_timeout_s,
        point_timeout_s=flags.real("--point-timeout", point_timeout, above=0, example="3600") or d.point_timeout_s))
    settings = settings_from_context(c)
    console = ui.console
    if repeats is None:
        from workbench.bench.verdict import with_default_repeats
        from workbench.gpus import first_gpu_name

        spec, why = with_default_repeats(spec, settings.results_path, first_gpu_name())
        if why:
            console.print(f"--repeats {spec.repeats}: {why}", soft_wrap=True, markup=False)
    session = benchplan.session_name(spec.model, aa=spec.aa)
    if dry_run:
        _print_plan(console, settings, spec, session, runtime)
        return None
    return _run(console, settings, spec, session, runtime, verbose)


def _print_plan(console: Console, settings, spec: benchplan.BenchSpec, session: str, runtime: str | None) -> None:
    from workbench.bench import session as bench_session

    places, python, where = plan_places(settings, runtime)
    setup = bench_session.model_setup(settings.root, settings.results_path, places.results, spec)
    if spec.mode == benchplan.SERVE:
        _print_serve_plan(console, settings, spec, session, places, python, where, setup)
        return
    runs = benchplan.plan_runs(spec, session, places, setup.args, python,
                               bench_session.kernels_digest(settings.root))
    shape = (f"{len(spec.modes)} paired run(s) of {spec.repeats} rounds, three engines each" if spec.driver == "paired"
             else f"{len(runs)} runs, ABBA order")
    console.print(f"[bold]plan[/] {benchplan.session_dir(places, session)} on {where} ({shape}"
                  f"{', A/A: both arms the baseline' if spec.aa else ''})", soft_wrap=True)
    _print_setup(console, setup, places, session, python)
    if spec.driver == "paired":
        from workbench.bench import paired

        for mode in spec.modes:
            cmd, env, _, _ = paired.command(spec, mode, session, places, setup.args, python,
                                            bench_session.kernels_digest(settings.root))
            console.print(f"  paired {mode}: {spec.repeats} rounds x {spec.iters} interleaved iterations per arm\n"
                          f"      {paired.describe(cmd)}", soft_wrap=True, markup=False)
    for r in runs if spec.driver == "cli" else []:
        env = " ".join(f"{k}={v}" for k, v in r.env.items())
        console.print(f"  {r.index:>2} {r.mode:10} {r.arm:8} {env}\n      {shlex.join(r.argv)}", soft_wrap=True,
                      markup=False)
    _print_gate(console, settings, spec, session, places, python, setup)


def _print_gate(console: Console, settings, spec: benchplan.BenchSpec, session: str, places, python: str,
                setup) -> None:
    from workbench.bench import session as bench_session

    if spec.gate:
        gate_model = bench_session.model_setup(settings.root, settings.results_path, places.results,
                                               replace(spec, weights="random")).args if setup.config else \
            benchplan.ModelArgs(spec.model)
        for arm, cmd, env in benchplan.gate_runs(spec, session, places, gate_model, python):
            console.print(f"  gate {arm:8} {benchplan.GEMM_SWITCH}={env[benchplan.GEMM_SWITCH]}: {cmd[-1]}",
                          soft_wrap=True, markup=False)


def _print_serve_plan(console: Console, settings, spec: benchplan.BenchSpec, session: str, places, python: str,
                      where: str, setup) -> None:
    """--dry-run of serve mode: every server run (arm, env, `vllm serve`) and its `vllm bench serve` per point."""
    from workbench.bench import session as bench_session

    runs = serve.plan_runs(spec, session, places, setup.args, python, bench_session.kernels_digest(settings.root))
    labels = ", ".join(p.label for p in serve.points(spec))
    port = f"port {spec.port}" if spec.port else "a free port"
    console.print(f"[bold]plan[/] {benchplan.session_dir(places, session)} on {where} ({len(runs)} server runs, "
                  f"ABBA order, each through the load points {labels} on {port}"
                  f"{', A/A: both arms the baseline' if spec.aa else ''})", soft_wrap=True)
    _print_setup(console, setup, places, session, python)
    for r in runs:
        env = " ".join(f"{k}={v}" for k, v in r.env.items())
        console.print(f"  {r.index:>2} serve      {r.arm:8} {env}\n      {shlex.join(r.server_argv)}\n"
                      f"      (until /health answers, at most {spec.server_timeout_s:g} s; log {r.server_log})",
                      soft_wrap=True, markup=False)
        for point in r.points:
            console.print(f"      {point.label:>9}: {shlex.join(point.argv)}", soft_wrap=True, markup=False)
    _print_gate(console, settings, spec, session, places, python, setup)


def _run(console: Console, settings, spec: benchplan.BenchSpec, session: str, runtime_flag: str | None,
         verbose: bool):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from workbench.bench import report
    from workbench.bench import session as bench_session
    from workbench.tasks.runtimes import open_runtime

    rt = open_runtime(settings, runtime_flag)
    try:
        results_root = rt.to_host(rt.places.results)
        results_root.mkdir(parents=True, exist_ok=True)
        console.print(f"A/B on {rt.describe()}: results in {results_root / session}", soft_wrap=True)
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      console=console, transient=False) as progress:
            per_run = len(serve.points(spec)) if spec.mode == benchplan.SERVE else 1
            bar = progress.add_task("A/B", total=len(spec.modes) * 2 * spec.repeats * per_run)

            def on_start(run, i, n):
                progress.update(bar, description=f"{run.mode} {run.arm} #{run.repeat + 1}")

            def on_done(run, result, done, n):
                calls = result.counts["total_calls"] if result.counts else "no dump"
                value = ", ".join(f"{k}={v:.4g}" for k, v in list(result.metrics.items())[:2]) or result.error
                clock = result.gpu.get("sm_clock_mhz_median")
                progress.console.print(f"  {result.run_id:24} {result.seconds:6.0f} s  {escape(value)}  custom-kernel "
                                       f"calls: {calls}" + (f"  SM {clock:.0f} MHz" if clock else ""))
                if result.error and not verbose and run is not None:
                    log = rt.to_host(run.log)
                    for line in log.read_text(errors="replace").splitlines()[-15:] if log.is_file() else []:
                        progress.console.print(f"    | {line}", markup=False, highlight=False)
                progress.advance(bar)

            outcome = bench_session.run_session(rt, settings.root, session, spec, on_start, on_done,
                                                quiet=not verbose)
    finally:
        rt.close()
    _report(console, outcome, spec.aa, report)
    if not outcome.validity.valid:
        raise WorkbenchError(f"INVALID A/B ({outcome.validity.reasons[0]}); results kept in {outcome.session_dir}")
    return outcome


def _report(console: Console, outcome, aa: bool, report) -> None:
    from workbench.bench import verdict

    labels = ("A", "A again") if aa else ("baseline", "custom")
    summary = json.loads(outcome.summary_path.read_text())
    if summary.get("serve"):
        console.print(report.render_serve_table(summary["serve"]["medians"], dict(zip(("baseline", "custom"), labels,
                                                                                      strict=True))))
    if outcome.rows:
        console.print(report.render_table(outcome.rows, labels=labels))
    note = verdict.noise_note(outcome.rows)
    if note:
        console.print(f"[yellow]{note}[/]")
    for style, line in report.summary_lines(summary):
        console.print(f"[{style}]{escape(line)}[/]" if style else line, markup=bool(style))
    v = outcome.validity
    if v.valid:
        what = "no run" if aa else f"custom runs made {list(v.custom_calls)} custom-kernel calls, baseline runs"
        console.print(f"[green]VALID[/]: {what} {list(v.baseline_calls)}")
    else:
        console.print("[red bold]INVALID A/B[/]: " + escape("; ".join(v.reasons)))
        for fix in v.fixes:
            console.print(f"  fix: {escape(fix)}")
    if outcome.floors_path:
        console.print(f"A/A floors recorded in {outcome.floors_path} (used by later verdicts on this GPU and model)")
    if summary.get("serve") is not None and outcome.chart_path is None and not report.have_matplotlib():
        console.print(report.PLOT_MISSING, markup=False)
    what = "plot" if summary.get("serve") is not None else "chart"
    console.print(f"results: {outcome.session_dir}" + (f"  {what}: {outcome.chart_path}" if outcome.chart_path else ""),
                  soft_wrap=True)


@task(help={"a": "the first saved session: results/<timestamp>-<model>, its name, or latest~N (the N-th before the "
                 "newest in results/index.jsonl)", "b": "the second saved session (the same forms; latest: the newest)",
            "arm": "which arm of each session to compare (default custom)",
            "model": "latest / latest~N count only index sessions whose model contains this text (A/A ones never)",
            "gpu": "latest / latest~N count only index sessions on a GPU whose name contains this text"})
def compare(c, a, b, arm="custom", model=None, gpu=None):
    """Compare one arm of two saved sessions (e.g. two versions of your kernel), named or picked from the index."""
    from workbench.bench import index, report, results, verdict
    from workbench.bench import session as bench_session

    console = ui.console
    results_root = settings_from_context(c).results_path

    def note(text: str) -> None:
        ui.err_console.print(f"note: {text}", markup=False)

    picked = [index.resolve(results_root, d, model, gpu, note) for d in (a, b)]
    if (model or gpu) and picked == [None, None]:
        raise WorkbenchError("--model / --gpu filter the index: name a session latest or latest~N, e.g. "
                             "invoke bench.compare latest~1 latest --model Qwen")
    paths = [results.session_path(results_root, p or d) for p, d in zip(picked, (a, b), strict=True)]
    for d, p in zip((a, b), picked, strict=True):
        if p is not None:
            note(f"{d} = {p}")
    rows, chart, validities = bench_session.compare_sessions(paths[0], paths[1], out_dir=paths[1], arm=arm)
    console.print(report.render_table(rows, labels=(paths[0].name, paths[1].name)))
    note_text = verdict.noise_note(rows)
    if note_text:
        console.print(f"[yellow]{note_text}[/]")
    for p, v in zip(paths, validities, strict=True):
        state = "[green]valid[/]" if v.valid else "[red]INVALID[/]: " + escape("; ".join(v.reasons))
        console.print(f"{p.name}: {state}")
    if chart:
        console.print(f"chart: {chart}")
    return rows


@task(help={"session": "the saved session: results/<timestamp>-<model>, or its name under the results folder"})
def summary(c, session):
    """Judge a saved session again from its runs: summary.json and chart, as at the end of `invoke bench` (a session
    cut short by a time limit or Ctrl-C keeps every finished run; or after new A/A floors)."""
    from workbench.bench import report, results, saved

    settings = settings_from_context(c)
    path = results.session_path(settings.results_path, session)
    if not path.is_dir():
        raise WorkbenchError(f"{session}: no such session folder: pass results/<timestamp>-<model> or its name")
    outcome = saved.resummarize(path, settings.results_path)
    summary_data = json.loads(outcome.summary_path.read_text())
    unfinished = summary_data.get("unfinished")
    if unfinished:
        ui.console.print(f"[yellow]unfinished session: {unfinished['saved_records']} of "
                         f"{unfinished['planned_records']} planned results saved; judged on those[/]")
    _report(ui.console, outcome, bool(summary_data.get("aa")), report)
    return outcome


@task(help={"session": "the saved session: results/<timestamp>-<model>, or its name under the results folder",
            "out": "CSV path (default <session>/runs.csv)"})
def export(c, session, out=None):
    """Write a saved session's runs as CSV: one row per run with every metric, custom calls and GPU clocks."""
    from workbench.bench import export as bench_export
    from workbench.bench import results

    path = results.session_path(settings_from_context(c).results_path, session)
    written, n = bench_export.export_csv(path, Path(out) if out else None)
    ui.console.print(f"{n} run(s) of {path.name} written to {written}", soft_wrap=True, markup=False)
    return written


@task(help={"model": "shipped config name or config.json (default qwen2.5-0.5b)",
            "out": "results JSON path (default results/decode_proxy-<model>-<utc>.json)",
            "extra": "more flags for python -m workbench.bench.proxy, e.g. \"--device cpu\"",
            "dry_run": "print the command, run nothing"})
def proxy(c, model="qwen2.5-0.5b", out=None, extra="", dry_run=False):
    """Model-level A/B without vLLM: an HF model from a config, random weights, GEMMs routed or not (a GEMM-heavy
    step, not a prediction of vLLM's time: the real-engine A/B prints the table's prediction beside its result)."""
    console = ui.console
    cmd = [sys.executable, "-m", "workbench.bench.proxy", "--model", model, *benchplan.parse_extra(extra)]
    if out:
        cmd += ["--out", str(out)]
    console.print(f"$ {shlex.join(cmd)}", soft_wrap=True, markup=False)
    if dry_run:
        return None
    rc = subprocess.call(cmd)
    if rc != 0:
        raise WorkbenchError(f"decode proxy exited {rc} (see above); a CPU-only host can pass --extra \"--device cpu\"")
    return rc


ns = Collection("bench")
ns.add_task(ab, default=True)
ns.add_task(compare)
ns.add_task(export)
ns.add_task(summary)
ns.add_task(proxy)
