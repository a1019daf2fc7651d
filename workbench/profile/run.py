"""Running a profile plan where the steps run (the dev container or this host) and reading its files back:
the tool checked first, its output tee'd to a log, the exports parsed into tables written beside the report."""

from __future__ import annotations

import csv
import json
import shlex
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

from workbench.errors import WorkbenchError
from workbench.profile import attribution, ncu, nsys
from workbench.profile.peaks import peaks_for
from workbench.runtime import Runtime, discard

INSTALL = {
    "ncu": "install Nsight Compute (NVIDIA's CUDA apt repository: apt install nsight-compute-<version>, or the CUDA "
           "toolkit's nsight-compute folder) and put ncu on PATH, or pass --tool /path/to/ncu",
    "nsys": "install Nsight Systems (apt install nsight-systems-cli from NVIDIA's devtools repository, as vLLM's "
            "profiling guide shows) and put nsys on PATH, or pass --tool /path/to/nsys",
}


def require_tool(rt: Runtime, tool: str, kind: str) -> None:
    """One line with what to install when the profiler is not where the steps run."""
    rc = rt.run(["bash", "-c", f"command -v {shlex.quote(tool)}"], out=discard, err=discard)
    if rc != 0:
        raise WorkbenchError(f"{tool} not found on {rt.describe()}: {INSTALL[kind]}")


def tee(argv: tuple[str, ...] | list[str], log: str) -> list[str]:
    return ["bash", "-c", f"set -o pipefail; {shlex.join(argv)} 2>&1 | tee {shlex.quote(log)}"]


def write_rows(rows: list, base: Path, meta: dict[str, Any]) -> tuple[Path, Path]:
    """<base>.json (meta + rows) and <base>.csv (the rows), the field names carrying their units."""
    base.parent.mkdir(parents=True, exist_ok=True)
    js, cs = base.with_suffix(".json"), base.with_suffix(".csv")
    js.write_text(json.dumps({**meta, "rows": [asdict(r) for r in rows]}, indent=1, default=str))
    if rows:
        names = [f.name for f in fields(rows[0])]
        with cs.open("w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=names)
            writer.writeheader()
            writer.writerows(asdict(r) for r in rows)
    return js, cs


def run_ncu(rt: Runtime, p: ncu.NcuPlan, root: Path, gpu_hint: str | None = None,
            quiet: bool = False) -> tuple[list[ncu.NcuKernelRow], Path]:
    """Profile, export the raw page, and write ncu-<arm>-kernels.{json,csv}; returns the rows and the JSON."""
    require_tool(rt, p.argv[0], "ncu")
    rt.to_host(p.log).parent.mkdir(parents=True, exist_ok=True)
    sink = {"out": discard, "err": discard} if quiet else {}
    rc = rt.run(tee(p.argv, p.log), env=p.env, cwd=rt.places.results, **sink)
    log = rt.to_host(p.log)
    problem = ncu.log_problem(log.read_text(errors="replace") if log.is_file() else "")
    if problem:
        raise WorkbenchError(problem)
    if not rt.to_host(p.report).is_file():
        raise WorkbenchError(f"ncu exited {rc} and wrote no report {rt.to_host(p.report)}: see {log}")
    exported: list[bytes] = []
    rc = rt.run(list(p.export_argv), out=exported.append, err=discard)
    csv_path = rt.to_host(p.csv)
    csv_path.write_bytes(b"".join(exported))
    if rc != 0:
        raise WorkbenchError(f"ncu --import exited {rc} on {rt.to_host(p.report)}: the report is kept; "
                             f"export it by hand with {shlex.join(p.export_argv)}")
    rows, peaks, n = ncu.table_from_export(csv_path, lambda gpu: peaks_for(root, gpu or gpu_hint))
    meta = {"arm": p.arm, "selection": p.selection, "launches": n, "report": str(rt.to_host(p.report)),
            "argv": list(p.argv), "env": p.env, "peaks": asdict(peaks) if peaks else None}
    js, _ = write_rows(rows, csv_path.with_name(f"ncu-{p.arm}-kernels"), meta)
    return rows, js


def run_nsys(rt: Runtime, p: nsys.NsysPlan, quiet: bool = False) -> tuple[list[nsys.NsysKernelRow], Path]:
    """Capture, then `nsys stats`; a failed summary is one line naming the kept capture."""
    require_tool(rt, p.argv[0], "nsys")
    rt.to_host(p.log).parent.mkdir(parents=True, exist_ok=True)
    sink = {"out": discard, "err": discard} if quiet else {}
    rc = rt.run(tee(p.argv, p.log), env=p.env, cwd=rt.places.results, **sink)
    report = rt.to_host(p.report)
    if not report.is_file():
        raise WorkbenchError(f"nsys exited {rc} and wrote no capture {report}: see {rt.to_host(p.log)}")
    said: list[bytes] = []
    rc = rt.run(list(p.stats_argv), out=said.append, err=said.append)
    stats = rt.to_host(p.stats_csv)
    if rc != 0 or not stats.is_file():
        raise nsys.stats_failure(report, rc, b"".join(said).decode(errors="replace"))
    rows = nsys.kernel_summary(stats.read_text(errors="replace"))
    js, _ = write_rows(rows, stats.with_name(f"nsys-{p.arm}-kernels"),
                       {"arm": p.arm, "capture": str(report), "argv": list(p.argv), "env": p.env})
    return rows, js


def trace_device(traces: list[Path]) -> str:
    """"cuda" when the traces hold GPU kernels, else "cpu" (a CPU-only profile: operators with self time)."""
    from workbench.trace.kernels import DEVICE_CATS, load_chrome_events

    for path in traces:
        if any(e.get("cat") in DEVICE_CATS for e in load_chrome_events(path)):
            return "cuda"
    return "cpu"


def analyse_session(session_dir: Path, mode: str, index, out_dir: Path | None = None) -> tuple[Any, Path, Path | None]:
    """The attribution of a session's profiled generates (<session>/profile/<mode>/<arm>/): JSON + chart."""
    folder = session_dir / "profile" / mode
    traces = attribution.session_traces(folder)
    missing = [arm for arm, files in traces.items() if not files]
    if missing:
        raise WorkbenchError(f"{folder} has no trace for the {' and '.join(missing)} arm: run the profiled generates "
                             f"(invoke profile.attribute {session_dir.name} --mode {mode} runs them)")
    device = trace_device([*traces["baseline"], *traces["custom"]])
    arms = {arm: attribution.arm_profile(arm, files, index, device) for arm, files in traces.items()}
    result = attribution.attribute(arms["baseline"], arms["custom"], attribution.measured_delta(session_dir, mode))
    out = out_dir or folder
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"attribution-{mode}.json"
    path.write_text(json.dumps({"session": session_dir.name, "mode": mode,
                                "traces": {a: p.traces for a, p in arms.items()}, **result.to_json()}, indent=1))
    chart = attribution.render_chart(result, out / f"attribution-{mode}.png", f"{session_dir.name} ({mode})")
    return result, path, chart
