"""What one `vllm bench` run left behind: its metrics (from --output-json), the per-process counter dumps
of custom_kernels, and the run record saved in results/<session>/runs/<run_id>.record.json."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from workbench.bench.plan import PlannedRun
from workbench.errors import WorkbenchError


@dataclass(frozen=True)
class MetricDef:
    key: str
    unit: str
    higher_is_better: bool


# What each run contributes to the comparison (one value per run; runs are the independent samples).
METRICS: dict[str, tuple[MetricDef, ...]] = {
    "latency": (MetricDef("p50_s", "s", False), MetricDef("p90_s", "s", False), MetricDef("p99_s", "s", False),
                MetricDef("avg_latency_s", "s", False)),
    "throughput": (MetricDef("tokens_per_second", "tok/s", True), MetricDef("requests_per_second", "req/s", True),
                   MetricDef("elapsed_time_s", "s", False)),
    # One record per load point of a server's run (RunResult.point). TPOT first: the decode step's time per token,
    # where a GEMM kernel for decode shows (the index's verdict for the point).
    "serve": (MetricDef("tpot_p50_ms", "ms", False), MetricDef("tpot_p99_ms", "ms", False),
              MetricDef("ttft_p50_ms", "ms", False), MetricDef("ttft_p99_ms", "ms", False),
              MetricDef("itl_p50_ms", "ms", False), MetricDef("itl_p99_ms", "ms", False),
              MetricDef("output_throughput_tok_s", "tok/s", True)),
}


def group(mode: str, point: str = "") -> str:
    """What a comparison row, a floor and a verdict are keyed by: the mode, and for serve its load point
    ("serve c=8"), since the noise and the effect depend on the load."""
    return f"{mode} {point}" if point else mode


def parse_run_json(mode: str, data: dict[str, Any]) -> dict[str, float]:
    """Metrics of one run from the JSON `vllm bench ... --output-json` writes (0.13.0 to 0.33.0).

    latency writes {"avg_latency", "latencies", "percentiles": {10, 25, 50, 75, 90, 99}} (the int keys
    become strings in JSON); throughput {"elapsed_time", "num_requests", "total_num_tokens",
    "requests_per_second", "tokens_per_second"}.
    """
    try:
        if mode == "latency":
            pct = {str(k): float(v) for k, v in data["percentiles"].items()}
            return {"p50_s": pct["50"], "p90_s": pct["90"], "p99_s": pct["99"],
                    "avg_latency_s": float(data["avg_latency"])}
        if mode == "throughput":
            return {"tokens_per_second": float(data["tokens_per_second"]),
                    "requests_per_second": float(data["requests_per_second"]),
                    "elapsed_time_s": float(data["elapsed_time"])}
    except (KeyError, TypeError, ValueError) as err:
        raise WorkbenchError(f"{mode} result JSON lacks {err}: is it from `vllm bench {mode} --output-json`?") from None
    raise WorkbenchError(f"unknown bench mode {mode!r}: latency or throughput")


def iteration_samples(mode: str, data: dict[str, Any]) -> list[float]:
    """The per-iteration latencies of a latency run (their spread is the within-run noise)."""
    if mode != "latency":
        return []
    try:
        return [float(v) for v in data.get("latencies") or []]
    except (TypeError, ValueError):
        return []


def read_counts(files: Iterable[Path]) -> dict[str, Any]:
    """Merge the per-process counter dumps of one run: total calls, per-layer calls, errors, and per rank
    (``rank_calls``: the calls of the processes that said which rank of a ``world_size`` group they were)."""
    layers: dict[str, int] = {}
    rank_calls: dict[str, int] = {}
    world_size = 0
    kernels: dict[str, int] = {}
    errors: list[str] = []
    processes = 0
    imported = 0
    routing: dict[str, str] = {}
    for path in sorted(files):
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as err:
            errors.append(f"{path.name}: unreadable ({err})")
            continue
        processes += 1
        if data.get("error"):
            errors.append(str(data["error"]))
        imported += bool(data.get("custom_kernels_imported", False))
        for layer, n in (data.get("call_counts") or {}).items():
            layers[layer] = layers.get(layer, 0) + int(n)
        routing.update(data.get("routing") or {})
        parallel = data.get("parallel") or {}
        if parallel.get("rank") is not None:
            rank = str(parallel["rank"])
            rank_calls[rank] = rank_calls.get(rank, 0) + sum(int(n) for n in (data.get("call_counts") or {}).values())
            world_size = max(world_size, int(parallel.get("world_size") or 1))
        for per_layer in (data.get("kernel_counts") or {}).values():
            for kernel, n in per_layer.items():
                kernels[kernel] = kernels.get(kernel, 0) + int(n)
    return {"processes": processes, "processes_with_custom_kernels": imported, "total_calls": sum(layers.values()),
            "rank_calls": dict(sorted(rank_calls.items(), key=lambda kv: int(kv[0]))), "world_size": world_size or None,
            "layers": len(layers), "call_counts": layers, "kernel_counts": kernels, "errors": errors,
            "routed_layers": sum(v.startswith("routed") for v in routing.values()),
            "skipped_layers": sum(v.startswith("skipped") for v in routing.values()),
            "skip_reasons": sorted({v.split(": ", 1)[-1] for v in routing.values() if v.startswith("skipped")})[:3]}


@dataclass
class RunResult:
    """One finished (or failed) run as recorded in results/<session>/runs/<run_id>.record.json."""

    run_id: str
    mode: str
    arm: str
    repeat: int
    index: int
    returncode: int
    started: float
    seconds: float
    argv: list[str]
    env: dict[str, str]
    metrics: dict[str, float] = field(default_factory=dict)
    counts: dict[str, Any] | None = None
    error: str = ""
    samples: list[float] = field(default_factory=list)  # latency: every timed iteration, in order
    gpu: dict[str, Any] = field(default_factory=dict)  # NVML readings while the run ran (clocks, load)
    point: str = ""  # serve: the load point ("c=8", "rate=4") this record measured

    @property
    def group(self) -> str:
        return group(self.mode, self.point)


def collect_run(to_host: Callable[[str], Path], run: PlannedRun, returncode: int, started: float,
                seconds: float) -> RunResult:
    """Read one run's output JSON and counter dumps through the host side of the runtime's paths."""
    result = RunResult(run_id=run.run_id, mode=run.mode, arm=run.arm, repeat=run.repeat, index=run.index,
                       returncode=returncode, started=started, seconds=seconds, argv=list(run.argv), env=run.env)
    out = to_host(run.output_json)
    if returncode != 0:
        result.error = f"vllm bench exited {returncode}; see {out.with_suffix('.log').name}"
    elif not out.is_file():
        result.error = f"no output JSON at {out.name}"
    else:
        try:
            data = json.loads(out.read_text())
            result.metrics = parse_run_json(run.mode, data)
            result.samples = iteration_samples(run.mode, data)
        except (WorkbenchError, json.JSONDecodeError) as err:
            result.error = str(err)
    pattern = to_host(run.counts_pattern)
    files = list(pattern.parent.glob(pattern.name.replace("{pid}", "*")))
    result.counts = read_counts(files) if files else None
    return result


def save_record(session_dir: Path, result: RunResult) -> Path:
    path = session_dir / "runs" / f"{result.run_id}.record.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(asdict(result), indent=1))
    return path


def read_env(session_dir: Path) -> dict[str, Any]:
    """The session's env capture (env.json); {} when there is none, an "error" entry when it is unreadable."""
    env_file = session_dir / "env.json"
    if not env_file.is_file():
        return {}
    try:
        env = json.loads(env_file.read_text())
    except (OSError, json.JSONDecodeError):
        return {"error": "env.json unreadable"}
    return env if isinstance(env, dict) else {"error": "env.json is not an object"}


def vllm_version(env: dict[str, Any]) -> str | None:
    """The vLLM release the env capture found installed (its dist version), None when it found none."""
    vllm = env.get("vllm") if isinstance(env.get("vllm"), dict) else {}
    return vllm.get("dist_version") or vllm.get("version")


def session_path(results_root: Path, given: str | Path) -> Path:
    """A session as the user names it: a folder path, or a session name under the results root."""
    p = Path(given)
    if p.is_dir() or p.is_absolute():
        return p
    return results_root / p if (results_root / p).is_dir() else p


def load_records(session_dir: Path) -> list[RunResult]:
    """All run records of a saved session, in execution order."""
    runs_dir = session_dir / "runs"
    if not runs_dir.is_dir():
        raise WorkbenchError(f"{session_dir} has no runs/ folder: pass a results/<timestamp>-<model> folder")
    known = set(RunResult.__dataclass_fields__)
    records = []
    for p in sorted(runs_dir.glob("*.record.json")):
        try:
            data = json.loads(p.read_text())
        except json.JSONDecodeError:
            raise WorkbenchError(f"{p} is not valid JSON: the session's records are damaged") from None
        records.append(RunResult(**{k: v for k, v in data.items() if k in known}))
    if not records:
        raise WorkbenchError(f"{session_dir} holds no run records (*.record.json): did the bench finish any run?")
    return sorted(records, key=lambda r: r.index)
