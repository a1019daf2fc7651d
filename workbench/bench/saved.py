"""A saved session judged again from what it left on disk (plan.json, runs/*.record.json): for a session cut
short by a time limit or Ctrl-C before its summary, or after new floors were recorded."""

from __future__ import annotations

import json
from pathlib import Path

from workbench.bench import index
from workbench.bench.results import load_records
from workbench.bench.session import SessionOutcome, summarize_session
from workbench.errors import WorkbenchError


def resummarize(session_dir: Path, results_root: Path) -> SessionOutcome:
    """summary.json and the chart from the session's saved runs and plan, as at the end of `invoke bench`; the
    session joins the index if it never got there (it stopped before its end)."""
    plan_file = session_dir / "plan.json"
    if not plan_file.is_file():
        raise WorkbenchError(f"{session_dir} has no plan.json: pass a results/<timestamp>-<model> folder that "
                             "`invoke bench` made")
    try:
        saved = json.loads(plan_file.read_text())
    except json.JSONDecodeError:
        raise WorkbenchError(f"{plan_file} is not valid JSON: the session's plan is damaged") from None
    records = load_records(session_dir)
    if not records:
        raise WorkbenchError(f"{session_dir.name} has no finished run in runs/: nothing to judge")
    try:  # an earlier summary only lends the weights it recorded; a damaged one is rewritten below
        old = json.loads((session_dir / "summary.json").read_text())
    except (OSError, json.JSONDecodeError):
        old = {}
    old = old if isinstance(old, dict) else {}
    spec = saved.get("spec") or {}
    meta = {"spec": spec, "runtime": saved.get("runtime"), "model_weights": old.get("model_weights")}
    planned = sum(len(r.get("points") or [None]) for r in saved.get("runs") or [])
    if planned > len(records) and spec.get("driver") != "paired":
        meta["unfinished"] = {"planned_records": planned, "saved_records": len(records)}
    outcome = summarize_session(session_dir, records, meta, results_root=results_root, aa=bool(spec.get("aa")))
    if not any(line.get("session") == session_dir.name for line in index.read(results_root)):
        index.append(results_root, index.entry(session_dir.name, json.loads(outcome.summary_path.read_text())))
    return outcome
