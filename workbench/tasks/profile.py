"""profile.ncu, profile.nsys, profile.attribute: Nsight Compute / Nsight Systems on one arm of a bench run, and
an A/B session's time per kernel category (logic: workbench.profile)."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

from invoke import Collection, task

from workbench import flags, ui
from workbench.config import settings_from_context
from workbench.errors import WorkbenchError
from workbench.tasks.runtimes import plan_places

COMMON = {
    "arm": "which arm to profile: baseline (VLLM_USE_CUSTOM_GEMM=0) or custom (=1, the op's NVTX range on)",
    "session": "a saved bench session (results/<timestamp>-<model> or its name): its model, lengths and arm "
               "environment; the files go to <session>/profile/",
    "model": "without --session: the model as `invoke bench --model` takes it (default Qwen/Qwen2.5-0.5B)",
    "batch_size": "prompts in the profiled batch (default: the session's, else 8)",
    "output_len": "tokens generated in the profiled batch (default 8: one prefill and 7 decode steps)",
    "from_start": "profile from process start (vLLM < 0.24, whose bench latency --profile takes only the torch "
                  "profiler); bound the capture with --launch-skip/--launch-count",
    "tool": "the profiler's executable (default ncu / nsys on PATH where the steps run)",
    "runtime": "docker (the dev container) or host (this machine's workbench.python); default workbench.runtime",
    "dry_run": "print the plan (command lines, env, files) and run nothing",
}


def _workload(settings, runtime, arm, session, model, batch_size, output_len, eager, from_start, tool_name):
    """(workload, where, model setup, spec) of one arm's profiled batch (workbench.profile.workload)."""
    from workbench.profile import workload
    from workbench.tasks.runtimes import path_mapper

    places, python, where = plan_places(settings, runtime)
    work, setup, spec = workload.profiled(settings, places, python, path_mapper(settings, runtime), arm, session,
                                          model, batch_size, output_len, eager, from_start, tool_name)
    return work, where, setup, spec


def _show(where: str, argv, env: dict[str, str], files: list[str], notes: list[str]) -> None:
    console = ui.console
    console.print(f"on {where}:", markup=False)
    console.print("  env: " + " ".join(f"{k}={v}" for k, v in env.items()), markup=False)
    console.print(f"  + {shlex.join(argv)}", markup=False)
    for note in notes:
        console.print(f"  {note}", markup=False)
    console.print("  files: " + ", ".join(files), markup=False)


def _open(settings, runtime, setup, spec, tool: str | None = None, kind: str = ""):
    """The runtime, the profiler checked there first (before any model folder is made), the model ready."""
    from workbench.bench import session as bench_session
    from workbench.profile.run import require_tool
    from workbench.tasks.runtimes import open_runtime

    rt = open_runtime(settings, runtime)
    try:
        if tool:
            require_tool(rt, tool, kind)
        bench_session.prepare_model(rt, setup, spec.seed)
    except BaseException:
        rt.close()
        raise
    return rt


@task(help={**COMMON, "launch_count": "kernel launches to profile after the filter (default 200)",
            "launch_skip": "matching launches to skip first (default 0)",
            "kernel_regex": "profile kernels whose name matches this regex instead of the arm's default selection",
            "metrics": "comma-separated ncu metrics instead of the default set (keep gpu__time_duration.sum; e.g. "
                       "when this ncu release names a metric differently)"})
def ncu(c, arm="custom", session=None, model=None, batch_size=None, output_len=None, launch_count=None,
        launch_skip=None, kernel_regex=None, metrics=None, from_start=False, tool="ncu", runtime=None, dry_run=False):
    """Nsight Compute on one arm: the op's kernels (custom) or cuBLAS's GEMMs (baseline); time, GB/s, FLOP/s, % peak."""
    from workbench.profile import capture
    from workbench.profile import ncu as ncu_plan
    from workbench.profile.run import run_ncu

    settings = settings_from_context(c)
    count = flags.integer("--launch-count", launch_count, minimum=1, example="200") or 200
    skip = flags.integer("--launch-skip", launch_skip, minimum=0, example="0") or 0
    work, where, setup, spec = _workload(settings, runtime, arm, session, model, batch_size, output_len, True,
                                         from_start, "ncu")
    nvtx_range, _ = capture.nvtx_names(settings.root)
    chosen = tuple(m.strip() for m in metrics.split(",") if m.strip()) if metrics else ncu_plan.METRICS
    p = ncu_plan.plan(work, nvtx_range, count, skip, kernel_regex, chosen, ncu=tool)
    _show(where, p.argv, p.env, [p.report, p.csv, p.log],
          [f"selects: {p.selection}", f"then: {shlex.join(p.export_argv)}"])
    if dry_run:
        return None
    rt = _open(settings, runtime, setup, spec, tool, "ncu")
    try:
        rows, path = run_ncu(rt, p, settings.root)
    finally:
        rt.close()
    _print_ncu(rows, path)
    return rows


def _print_ncu(rows, path: Path) -> None:
    from rich.table import Table

    meta = json.loads(path.read_text())
    peaks = meta.get("peaks")
    table = Table(title=f"ncu {meta['arm']}: {meta['launches']} launches ({meta['selection']})")
    for col in ("kernel", "launches", "total µs", "avg µs", "GB/s", "TFLOP/s", "% copy BW", "% matmul peak"):
        table.add_column(col, justify="left" if col == "kernel" else "right")

    def f(v, fmt=".1f"):
        return "-" if v is None else format(v, fmt)

    for r in rows[:25]:
        table.add_row(r.kernel[:70], str(r.launches), f(r.gpu_time_us), f(r.avg_time_us, ".2f"), f(r.dram_gbps, ".0f"),
                      f(r.tflops, ".2f"), f(r.pct_of_copy_bw), f(r.pct_of_matmul_peak))
    ui.console.print(table)
    ui.console.print(f"peaks: {peaks['copy_gbps']:.0f} GB/s, {peaks['matmul_tflops']:.0f} TFLOP/s ({peaks['source']})"
                     if peaks else "peaks: unknown GPU, no % of peak", markup=False)
    ui.console.print(f"wrote {path} and {path.with_suffix('.csv')}; report {meta['report']}", markup=False)


@task(help={**COMMON, "eager": "profile with --enforce-eager (default: vLLM's CUDA graphs, traced node by node)"})
def nsys(c, arm="custom", session=None, model=None, batch_size=None, output_len=None, eager=False, from_start=False,
         tool="nsys", runtime=None, dry_run=False):
    """Nsight Systems on one arm with vLLM's flags; the kernel summary as a table, or one line naming the capture."""
    from workbench.profile import nsys as nsys_plan
    from workbench.profile.run import run_nsys

    settings = settings_from_context(c)
    work, where, setup, spec = _workload(settings, runtime, arm, session, model, batch_size, output_len, eager,
                                         from_start, "nsys")
    p = nsys_plan.plan(work, nsys=tool)
    _show(where, p.argv, p.env, [p.report, p.stats_csv, p.log], [f"then: {shlex.join(p.stats_argv)}"])
    if dry_run:
        return None
    rt = _open(settings, runtime, setup, spec, tool, "nsys")
    try:
        rows, path = run_nsys(rt, p)
    finally:
        rt.close()
    total = sum(r.gpu_time_us for r in rows) or 1.0
    for r in rows[:20]:
        ui.console.print(f"{r.gpu_time_us:12.1f} µs {100 * r.gpu_time_us / total:5.1f}% {r.instances:7d}  "
                         f"{r.category:12} {r.origin:12} {r.kernel[:80]}", markup=False)
    ui.console.print(f"wrote {path}", markup=False)
    return rows


@task(help={"session": "the A/B session (results/<timestamp>-<model> or its name)",
            "mode": "which of its modes to profile: latency (default) or throughput",
            "run": "run the profiled generates when the session has none yet (default; --no-run: analyse only)",
            "fork": "vLLM source tree for the kernel -> source map (default: workbench.fork when it has csrc/)",
            "runtime": COMMON["runtime"], "dry_run": "print the profiled run's command and run nothing"})
def attribute(c, session, mode="latency", run=True, fork=None, runtime=None, dry_run=False):
    """Time per kernel category, baseline vs custom, beside the session's measured end-to-end delta."""
    from workbench.bench import session as bench_session
    from workbench.profile import attribution, capture, workload
    from workbench.profile.run import analyse_session, tee
    from workbench.tasks.runtimes import path_mapper

    settings = settings_from_context(c)
    session_dir = workload.session_dir(settings.results_path, session)
    spec = capture.spec_from_session(session_dir)
    traces = attribution.session_traces(session_dir / "profile" / mode)
    if run and not all(traces.values()):
        places, python, where = plan_places(settings, runtime)
        setup = bench_session.model_setup(settings.root, settings.results_path, places.results, spec)
        folder = workload.visible(path_mapper(settings, runtime), session_dir.absolute() / "profile" / mode)
        argv = capture.attribution_command(spec, mode, folder, places, setup.args, python,
                                           bench_session.kernels_digest(settings.root))
        _show(where, argv, {}, [f"{folder}/<arm>/*.pt.trace.json"], ["one profiled generate per arm, no timed round"])
        if dry_run:
            return None
        rt = _open(settings, runtime, setup, spec)
        try:
            (session_dir / "profile" / mode).mkdir(parents=True, exist_ok=True)
            code = rt.run(tee(argv, f"{folder}/engine_ab.log"), env=rt.module_env(), cwd=rt.places.results)
        finally:
            rt.close()
        if code != 0:
            raise WorkbenchError(f"the profiled generates exited {code}: see "
                                 f"{session_dir}/profile/{mode}/engine_ab.log")
    elif dry_run:
        ui.console.print(f"{session_dir}/profile/{mode} holds both arms' traces: nothing to run", markup=False)
        return None
    result, path, chart = analyse_session(session_dir, mode, _index(settings, fork))
    _print_attribution(result, path, chart)
    return result


def _index(settings, fork):
    from workbench.models import KERNELS_PACKAGE
    from workbench.trace.kernel_map import build_index

    tree = Path(fork) if fork else settings.fork_path
    return build_index(tree if (tree / "csrc").is_dir() else None, custom=settings.root / KERNELS_PACKAGE)


def _print_attribution(result, path: Path, chart: Path | None) -> None:
    from rich.table import Table

    from workbench.profile import gaps

    table = Table(title=f"{result.what} per profiled generate, by kernel category")
    for col in ("category", "baseline µs", "custom µs", "delta µs", "calls b/c"):
        table.add_column(col, justify="left" if col == "category" else "right")
    for r in result.rows:
        table.add_row(r.category, f"{r.baseline_gpu_time_us:.1f}", f"{r.custom_gpu_time_us:.1f}", f"{r.delta_us:+.1f}",
                      f"{r.baseline_calls}/{r.custom_calls}")
    table.add_row("total", f"{result.baseline_gpu_time_us:.1f}", f"{result.custom_gpu_time_us:.1f}",
                  f"{result.custom_gpu_time_us - result.baseline_gpu_time_us:+.1f}", "")
    ui.console.print(table)
    m = result.measured
    ranks = f" over {result.ranks} ranks" if result.ranks > 1 else ""
    line = f"sum of per-kernel deltas{ranks}: {result.kernel_delta_us:+.1f} µs ({result.kernel_delta_pct:+.2f}% of " \
           "the baseline's kernel time)"
    if "kernel_delta_pct_of_e2e" in m:
        line += f" = {m['kernel_delta_pct_of_e2e']:+.2f}% of its {m['baseline_s']:.4f} s per generate" + \
                (" (one rank's share)" if result.ranks > 1 else "")
    ui.console.print(line, markup=False)
    for category, delta in result.not_summed.items():
        ui.console.print(f"not summed: {category} {delta:+.1f} µs (a collective runs until every rank arrives: its "
                         "time holds the other ranks' lateness, not work)", markup=False)
    for line in gaps.report(result.idle):
        ui.console.print(line, markup=False)
    if "delta_pct" in m:
        ui.console.print(f"measured end to end: {m['delta_pct']:+.2f}% time (custom/baseline {m['time_ratio']:.4f}, "
                         f"{m['source']}; {m.get('verdict')})", markup=False)
    else:
        ui.console.print("measured end to end: the session has no summary for this mode", markup=False)
    ui.console.print(f"wrote {path}" + (f" and {chart}" if chart else " (no chart: pip install -e .[plot])"),
                     markup=False)


ns = Collection("profile")
ns.add_task(ncu)
ns.add_task(nsys)
ns.add_task(attribute)
