"""`invoke bench`: end-to-end A/B of the custom GEMM in vLLM, saved-result comparison, the decode proxy,
and the kernel-level GEMM benchmark (custom_kernels.bench.gemm). Logic: workbench/bench.py."""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

from invoke import task
from rich.console import Console

from workbench import bench as benchlib
from workbench.config import settings_from_context
from workbench.errors import WorkbenchError, user_errors

HELP = {
    "custom_gemm": "A/B the custom GEMM in vLLM: `vllm bench` with VLLM_USE_CUSTOM_GEMM=0 vs =1, alternating",
    "model": "HF model id or path as vLLM takes it (--custom-gemm), or a shipped config name/config.json "
             "(--decode-proxy, --kernels); default Qwen/Qwen2.5-0.5B / qwen2.5-0.5b",
    "mode": "latency (p50/p90/p99 of one batch), throughput (tokens/s), or both",
    "input_len": "prompt tokens per request",
    "output_len": "generated tokens per request",
    "num_prompts": "requests per throughput run",
    "batch_size": "requests per latency batch",
    "repeats": "runs per arm (>= 4 for the significance test to be able to pass)",
    "tp": "tensor-parallel size",
    "extra": "more `vllm bench` arguments, same for both arms, e.g. \"--enforce-eager --max-model-len 2048\"",
    "compile_cache": "off (default: VLLM_DISABLE_COMPILE_CACHE=1) or per-arm (separate VLLM_CACHE_ROOT per arm)",
    "gemm_layers": "only these layers use the custom GEMM (VLLM_CUSTOM_GEMM_LAYERS globs, "
                   "e.g. \"model.layers.*.mlp.*\")",
    "verbose": "stream vLLM's output while it runs (it is always saved to results/<session>/runs/*.log)",
    "dry_run": "print the plan (every command line and env) and exit without running anything",
    "compare": "two saved results/<timestamp>-<model> folders to compare: --compare A --compare B",
    "decode_proxy": "model-level A/B without vLLM or the container: HF model from a config, random weights",
    "kernels": "run the kernel-level GEMM benchmark (python -m custom_kernels.bench.gemm) in the dev container",
    "out": "--decode-proxy: results JSON path (default results/decode_proxy-<model>-<utc>.json)",
}


def _exec_fn(settings, quiet: bool = False):
    """The dev container executor from the foundation's engine (imported only when needed). ``quiet``:
    don't stream the command's output (each run's output is in its runs/*.log anyway)."""
    try:
        from workbench.engine import exec_in_container
    except ImportError as err:
        raise WorkbenchError(f"the dev-container engine is unavailable ({err}); update the workbench checkout "
                             "(workbench/engine.py) and run `invoke up`") from None
    import inspect

    params = inspect.signature(exec_in_container).parameters
    sink = {"out": lambda data: None, "err": lambda data: None} if quiet and "out" in params and "err" in params else {}
    return lambda cmd, env: exec_in_container(settings, cmd, env=env or None, **sink)


@task(help=HELP, iterable=["compare"], auto_shortflags=False)
@user_errors
def bench(c, custom_gemm=False, model=None, mode="latency", input_len=128, output_len=128, num_prompts=200,
          batch_size=8, repeats=5, tp=1, extra="", compile_cache="off", gemm_layers="", verbose=False, dry_run=False,
          compare=None, decode_proxy=False, kernels=False, out=None):
    """Benchmark: `--custom-gemm` (vLLM A/B), `--compare A --compare B`, `--decode-proxy`, `--kernels`."""
    console = Console()
    settings = settings_from_context(c)
    results_root = settings.path(settings.results)
    chosen = [name for name, on in (("--custom-gemm", custom_gemm), ("--compare", bool(compare)),
                                    ("--decode-proxy", decode_proxy), ("--kernels", kernels)) if on]
    if len(chosen) != 1:
        raise WorkbenchError("choose one of --custom-gemm, --compare A --compare B, --decode-proxy, --kernels "
                             f"(got {', '.join(chosen) or 'none'})")
    if compare:
        return _compare(console, compare, results_root)
    if decode_proxy:
        return _decode_proxy(console, model or "qwen2.5-0.5b", out, extra, dry_run)
    if kernels:
        return _kernels(console, settings, model, tp, extra, dry_run)
    spec = benchlib.validate_spec(benchlib.BenchSpec(
        model=model or benchlib.BenchSpec.model, mode=mode, input_len=int(input_len), output_len=int(output_len),
        num_prompts=int(num_prompts), batch_size=int(batch_size), repeats=int(repeats), tp=int(tp),
        extra=benchlib.parse_extra(extra), compile_cache=compile_cache, gemm_layers=gemm_layers))
    session = benchlib.session_name(spec.model)
    runs = benchlib.plan_runs(spec, session)
    if dry_run:
        _print_plan(console, session, runs, results_root)
        return None
    return _run(console, settings, spec, session, runs, results_root, verbose)


def _print_plan(console: Console, session: str, runs, results_root: Path) -> None:
    console.print(f"[bold]plan[/] results/{session} → {results_root / session} ({len(runs)} runs, ABBA order)",
                  soft_wrap=True)
    console.print(f"  env capture: {shlex.join(benchlib.env_capture_command(session))}", soft_wrap=True)
    for r in runs:
        env = " ".join(f"{k}={v}" for k, v in r.env.items())
        console.print(f"  {r.index:>2} {r.mode:10} {r.arm:8} {env}\n      {shlex.join(r.argv)}", soft_wrap=True)


def _run(console: Console, settings, spec, session: str, runs, results_root: Path, verbose: bool = False):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from workbench import bench_session

    exec_fn = _exec_fn(settings, quiet=not verbose)
    results_root.mkdir(parents=True, exist_ok=True)
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, transient=False) as progress:
        bar = progress.add_task("A/B", total=len(runs))

        def on_start(run, i, n):
            progress.update(bar, description=f"{run.mode} {run.arm} #{run.repeat + 1}")

        def on_done(run, result, done, n):
            calls = result.counts["total_calls"] if result.counts else "no dump"
            value = ", ".join(f"{k}={v:.4g}" for k, v in list(result.metrics.items())[:2]) or result.error
            progress.console.print(f"  {run.run_id:24} {result.seconds:6.0f} s  {value}  custom-kernel calls: {calls}")
            if result.error and not verbose:
                log = benchlib.host_path(results_root, run.log)
                tail = log.read_text(errors="replace").splitlines()[-15:] if log.is_file() else []
                for line in tail:
                    progress.console.print(f"    | {line}", markup=False, highlight=False)
            progress.advance(bar)

        outcome = bench_session.run_session(results_root, session, spec, exec_fn, on_start, on_done)
    _report(console, outcome.rows, outcome.validity, outcome.session_dir, outcome.chart_path)
    if not outcome.validity.valid:
        raise WorkbenchError(f"INVALID A/B ({outcome.validity.reasons[0]}); results kept in {outcome.session_dir}")
    return outcome


def _report(console: Console, rows, validity, session_dir: Path, chart: Path | None) -> None:
    if rows:
        console.print(benchlib.render_table(rows))
    note = benchlib.noise_note(rows)
    if note:
        console.print(f"[yellow]{note}[/]")
    if validity.valid:
        console.print(f"[green]VALID[/]: custom runs made {list(validity.custom_calls)} custom-kernel calls, "
                      f"baseline runs {list(validity.baseline_calls)}")
    else:
        console.print("[red bold]INVALID A/B[/]: " + "; ".join(validity.reasons))
        for fix in validity.fixes:
            console.print(f"  fix: {fix}")
    console.print(f"results: {session_dir}" + (f"  chart: {chart}" if chart else ""))


def _compare(console: Console, dirs, results_root: Path):
    from workbench import bench_session

    dirs = [d for item in dirs for d in str(item).split(",") if d]
    if len(dirs) != 2:
        raise WorkbenchError(f"--compare needs exactly two result folders (got {len(dirs)}): "
                             "--compare results/A --compare results/B")
    paths = []
    for d in dirs:
        p = Path(d)
        paths.append(p if p.is_dir() or p.is_absolute() else results_root / d if (results_root / d).is_dir() else p)
    rows, chart, validities = bench_session.compare_sessions(paths[0], paths[1], out_dir=paths[1])
    console.print(benchlib.render_table(rows, labels=(paths[0].name, paths[1].name)))
    note = benchlib.noise_note(rows)
    if note:
        console.print(f"[yellow]{note}[/]")
    for p, v in zip(paths, validities, strict=True):
        state = "[green]valid[/]" if v.valid else "[red]INVALID[/]: " + "; ".join(v.reasons)
        console.print(f"{p.name}: {state}")
    if chart:
        console.print(f"chart: {chart}")
    return rows


def _decode_proxy(console: Console, model: str, out, extra: str, dry_run: bool):
    cmd = [sys.executable, "-m", "workbench.decode_proxy", "--model", model, *benchlib.parse_extra(extra)]
    if out:
        cmd += ["--out", str(out)]
    console.print(f"$ {shlex.join(cmd)}", soft_wrap=True)
    if dry_run:
        return None
    rc = subprocess.call(cmd)
    if rc != 0:
        raise WorkbenchError(f"decode proxy exited {rc} (see above); a CPU-only host can pass --extra \"--device cpu\"")
    return rc


def _kernels(console: Console, settings, model, tp: int, extra: str, dry_run: bool):
    """The kernel-level GEMM benchmark of custom_kernels (table + plot), run in the dev container."""
    from workbench.kernels import bench_command, run_kernel_command

    cmd = bench_command(settings.root, [model] if model else [], int(tp)) + list(benchlib.parse_extra(extra))
    console.print(f"$ {shlex.join(cmd)}  (in the dev container)", soft_wrap=True)
    if dry_run:
        return None
    rc = run_kernel_command(settings, cmd)
    if rc != 0:
        raise WorkbenchError(f"custom_kernels.bench.gemm exited {rc} in the dev container (see its output above)")
    return rc


TASKS = [bench]
