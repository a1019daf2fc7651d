"""Execute a planned A/B session: environment capture, the runs in ABBA order, records, table, chart.

The executor is injected (``exec_fn(cmd, env) -> exit code``): the task passes the dev container's
``workbench.engine.exec_in_container``; tests pass a real container or a local shell.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from workbench import bench
from workbench.errors import WorkbenchError

ExecFn = Callable[[list[str], dict[str, str]], int]
# Called after each run: (finished run, its result, runs done, runs total).
ProgressFn = Callable[[bench.PlannedRun, bench.RunResult, int, int], None]


@dataclass
class SessionOutcome:
    session_dir: Path
    records: list[bench.RunResult]
    rows: list
    validity: bench.Validity
    summary_path: Path
    chart_path: Path | None


def write_plan(session_dir: Path, spec: bench.BenchSpec, runs: Sequence[bench.PlannedRun]) -> Path:
    """results/<session>/plan.json: the spec and every command line, before anything runs."""
    session_dir.mkdir(parents=True, exist_ok=True)
    path = session_dir / "plan.json"
    path.write_text(json.dumps({"spec": asdict(spec), "runs": [asdict(r) for r in runs]}, indent=1))
    return path


def run_session(results_root: Path, session: str, spec: bench.BenchSpec, exec_fn: ExecFn,
                on_start: Callable[[bench.PlannedRun, int, int], None] | None = None,
                on_done: ProgressFn | None = None) -> SessionOutcome:
    """Run every planned run in order, save each run's record, then judge and summarize the session."""
    session_dir = results_root / session
    runs = bench.plan_runs(spec, session)
    write_plan(session_dir, spec, runs)
    bench.write_hook(session_dir)
    (session_dir / "runs").mkdir(parents=True, exist_ok=True)
    rc = exec_fn(bench.env_capture_command(session), {})
    if rc != 0:
        (session_dir / "env.json").write_text(json.dumps({"error": f"bench_env.py exited {rc}"}))
    records: list[bench.RunResult] = []
    for i, run in enumerate(runs):
        if on_start:
            on_start(run, i, len(runs))
        started = time.time()
        rc = exec_fn(run.command(), dict(run.env))
        result = bench.collect_run(results_root, run, rc, started, time.time() - started)
        bench.save_record(session_dir, result)
        records.append(result)
        if on_done:
            on_done(run, result, i + 1, len(runs))
        if len(records) >= 2 and all(r.error for r in records):
            break  # both arms fail from the start (bad model, out of memory, no GPU): don't repeat it N times
    return summarize_session(session_dir, records, spec_meta={"spec": asdict(spec)})


def summarize_session(session_dir: Path, records: Sequence[bench.RunResult],
                      spec_meta: dict[str, Any] | None = None) -> SessionOutcome:
    """Validity + comparison of one session's records; writes summary.json and chart.png."""
    validity = bench.check_validity(records)
    rows = bench.compare_arms(records)
    meta = {"session": session_dir.name, **(spec_meta or {})}
    env_file = session_dir / "env.json"
    if env_file.is_file():
        try:
            meta["env"] = json.loads(env_file.read_text())
        except json.JSONDecodeError:
            meta["env"] = {"error": "env.json unreadable"}
    summary = bench.summary_dict(rows, validity, meta)
    summary_path = session_dir / "summary.json"
    summary_path.write_text(json.dumps(summary, indent=1, default=str))
    title = f"{session_dir.name}: {'VALID' if validity.valid else 'INVALID A/B'}"
    chart = bench.plot_chart(records, session_dir / "chart.png", title=title)
    return SessionOutcome(session_dir, list(records), rows, validity, summary_path, chart)


def compare_sessions(dir_a: Path, dir_b: Path, out_dir: Path | None = None,
                     arm: str = "custom") -> tuple[list, Path | None, list[bench.Validity]]:
    """--compare: the ``arm`` runs of two saved sessions (e.g. two kernel versions), plus each one's validity."""
    for d in (dir_a, dir_b):
        if not d.is_dir():
            raise WorkbenchError(f"{d} is not a folder: pass two results/<timestamp>-<model> folders")
    a, b = bench.load_records(dir_a), bench.load_records(dir_b)
    rows = bench.compare_arms(a, b, arm_a=arm, arm_b=arm)
    if not rows:
        raise WorkbenchError(f"{dir_a.name} and {dir_b.name} share no mode with successful '{arm}' runs to compare")
    chart = None
    if out_dir is not None:
        chart = bench.plot_chart(a, out_dir / f"compare-{dir_a.name}-vs-{dir_b.name}.png", records_b=b,
                                 arms=(arm, arm), labels=(dir_a.name[:15], dir_b.name[:15]),
                                 title=f"{arm}: {dir_a.name} vs {dir_b.name}")
    return rows, chart, [bench.check_validity(a), bench.check_validity(b)]
