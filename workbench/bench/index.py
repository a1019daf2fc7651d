"""results/index.jsonl: one line per finished bench session (when, where, what, which route, the verdict per
mode), appended as each session ends, so sessions can be found and selected without opening every folder."""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from workbench.bench.plan import MODES
from workbench.bench.results import METRICS
from workbench.errors import WorkbenchError
from workbench.filelock import exclusive

INDEX = "index.jsonl"  # in the results root
LOCK = ".index.lock"  # beside it: sessions ending together append one after the other
# How bench.compare names a session from the index: latest, latest~1 (the one before), ... (git's HEAD~N habit).
REF = re.compile(r"latest(?:~(\d+))?")


def route(env: dict[str, Any]) -> str:
    """"patch" when the env capture saw a patch of the series applied to the fork, else "plugin" (the
    entry point custom_kernels registers with stock vLLM)."""
    series = env.get("series") if isinstance(env.get("series"), dict) else {}
    states = series.get("patches") if isinstance(series.get("patches"), dict) else {}
    return "patch" if "applied" in states.values() else "plugin"


def mode_verdicts(summary: dict[str, Any], modes: Iterable[str]) -> dict[str, str]:
    """Per mode (serve: per load point, "serve c=8"), the session's verdict: INVALID for an invalid session, the
    paired driver's verdict, else the verdict on the mode's first metric (latency: p50_s, throughput:
    tokens_per_second, serve: tpot_p50_ms)."""
    if not summary.get("valid"):
        return {mode: "INVALID" for mode in modes}
    paired = summary.get("paired") or {}
    out = {}
    for mode in modes:
        if mode in paired:
            out[mode] = paired[mode].get("verdict", "?")
            continue
        first = METRICS[mode][0].key
        found = {c["mode"]: c["verdict"] for c in summary.get("comparisons", [])
                 if (c["mode"] == mode or c["mode"].startswith(f"{mode} ")) and c["metric"] == first}
        out.update(found or {mode: "no comparison"})
    return out


def entry(session: str, summary: dict[str, Any], now: float | None = None) -> dict[str, Any]:
    """The index line of a finished session, from its summary.json (which carries the env capture)."""
    env = summary.get("env") if isinstance(summary.get("env"), dict) else {}
    spec = summary.get("spec") or {}
    vllm = env.get("vllm") if isinstance(env.get("vllm"), dict) else {}
    fork = vllm.get("fork") if isinstance(vllm.get("fork"), dict) else {}
    gpus = env.get("gpus") if isinstance(env.get("gpus"), list) else []
    mode = spec.get("mode", "latency")
    modes = list(MODES) if mode == "both" else [mode]
    return {"time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now)), "session": session,
            "gpu": summary.get("gpu"), "nvidia_driver": gpus[0].get("driver_version") if gpus else None,
            "fork_commit": fork.get("commit"), "vllm_version": vllm.get("dist_version"), "model": spec.get("model"),
            "modes": modes, "driver": spec.get("driver", "cli"), "route": route(env), "aa": bool(summary.get("aa")),
            "valid": summary.get("valid"), "verdicts": mode_verdicts(summary, modes)}


def append(results_root: Path, line: dict[str, Any]) -> Path:
    """Add one line to the index. Under the lock and in one write to a file opened for appending: two sessions
    ending together (two hosts' jobs, two terminals) each leave their whole line."""
    path = results_root / INDEX
    data = (json.dumps(line, default=str) + "\n").encode()
    with exclusive(results_root / LOCK):
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)
    return path


def read(results_root: Path, note: Callable[[str], None] = lambda _: None) -> list[dict[str, Any]]:
    """Every line of the index, oldest first; a damaged line is skipped with a note."""
    path = results_root / INDEX
    if not path.is_file():
        return []
    out = []
    for n, text in enumerate(path.read_text(errors="replace").splitlines(), 1):
        if not text.strip():
            continue
        try:
            out.append(json.loads(text))
        except json.JSONDecodeError:
            note(f"{path}:{n} is not a JSON line: skipped")
    return out


def select(results_root: Path, model: str | None = None, gpu: str | None = None, include_aa: bool = False,
           note: Callable[[str], None] = lambda _: None) -> list[dict[str, Any]]:
    """Index lines whose model (and GPU) contain the given text, case-insensitive, oldest first; sessions whose
    folder is gone are skipped with a note, A/A sessions unless asked for (their custom arm ran the baseline)."""
    chosen = []
    for line in read(results_root, note):
        if model and model.lower() not in str(line.get("model", "")).lower():
            continue
        if gpu and gpu.lower() not in str(line.get("gpu", "")).lower():
            continue
        if line.get("aa") and not include_aa:
            continue
        if not line.get("session") or not (results_root / str(line["session"])).is_dir():
            note(f"{line.get('session')}: in the index, but its folder is gone from {results_root}: skipped")
            continue
        chosen.append(line)
    return chosen


def resolve(results_root: Path, ref: str, model: str | None = None, gpu: str | None = None,
            note: Callable[[str], None] = lambda _: None) -> str | None:
    """The session name ``latest`` / ``latest~N`` stands for among the index lines ``select`` keeps; None when
    ``ref`` is no such reference (a folder or session name instead)."""
    match = REF.fullmatch(ref)
    if match is None:
        return None
    back = int(match.group(1) or 0)
    found = select(results_root, model=model, gpu=gpu, note=note)
    if back >= len(found):
        wanted = " ".join(f"--{k} {v!r}" for k, v in (("model", model), ("gpu", gpu)) if v) or "no filter"
        raise WorkbenchError(f"{ref}: {results_root / INDEX} holds {len(found)} session(s) with their folder for "
                             f"{wanted}: run `invoke bench`, widen the filter, or name the session folder")
    return str(found[-1 - back]["session"])
