"""Serve mode: each arm's `vllm serve`, `vllm bench serve` against it at several load points, the server
stopped after the last one. Here: the plan (the server's and every point's command line, the files), the
parser of `vllm bench serve --save-result`'s JSON, and the one-line errors of a server's life.

A run is one server of one arm: started with that arm's environment (the switch, the compile cache, the counter
hook), it serves every load point in order, then stops. Runs go in ABBA order over the arms, so each point is
measured ABBA too; every point of a run is one record (RunResult.point) and the session's statistics compare the
arms per point. workbench/guest/serve_run.py runs one such run where the steps run (the dev container or this
host): it owns the server process and stops it whatever happens.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from workbench.bench.plan import (
    ARMS,
    COUNTS_ENV,
    HOOK,
    SERVE,
    VLLM_CLI,
    BenchSpec,
    ModelArgs,
    arm_env,
    arm_order,
    session_dir,
)
from workbench.bench.results import RunResult, read_counts
from workbench.errors import WorkbenchError
from workbench.runtime import Places, posix

DEFAULT_CONCURRENCIES = (1, 8, 32)
# The server listens on loopback only: its one client runs beside it.
HOST = "127.0.0.1"
PORT = "{port}"  # in the planned argv; the guest puts the port it took there
PERCENTILES = "50,99"  # --metric-percentiles: p50 and p99 of TTFT, TPOT and ITL
GUEST_SCRIPT = "serve_run.py"
# What a run's guest exits with when the server could not serve (its status file says which and why).
EXIT_SERVER = 3


@dataclass(frozen=True)
class ServePoint:
    """One load point: a max-concurrency (requests all sent at once, at most this many in flight) or a request
    rate (Poisson arrivals at this many per second, "inf": all at once)."""

    kind: str  # "concurrency" | "rate"
    value: str

    @property
    def label(self) -> str:
        return f"c={self.value}" if self.kind == "concurrency" else f"rate={self.value}"

    @property
    def slug(self) -> str:
        """For file names: "c8", "rate0.5", "rateinf"."""
        return self.label.replace("=", "")

    def flags(self) -> list[str]:
        return ["--max-concurrency", self.value] if self.kind == "concurrency" else ["--request-rate", self.value]


def parse_rates(text: str | None) -> tuple[str, ...]:
    """--request-rates "1,4,inf" as canonical numbers; one line on anything else."""
    out = []
    for word in _words(text):
        try:
            rate = float(word)
        except ValueError:
            rate = math.nan
        if not (rate > 0):  # also refuses nan
            raise WorkbenchError(f"--request-rates {text!r}: {word!r} is not a positive number or inf: e.g. "
                                 "--request-rates 1,4,inf")
        out.append("inf" if math.isinf(rate) else f"{rate:g}")
    return tuple(out)


def parse_concurrencies(text: str | None) -> tuple[int, ...]:
    """--concurrencies "1,8,32" as whole numbers >= 1; one line on anything else."""
    out = []
    for word in _words(text):
        if not word.isdigit() or int(word) < 1:
            raise WorkbenchError(f"--concurrencies {text!r}: {word!r} is not a whole number >= 1: e.g. "
                                 "--concurrencies 1,8,32")
        out.append(int(word))
    return tuple(out)


def _words(text: str | None) -> list[str]:
    return [w.strip() for w in str(text or "").split(",") if w.strip()]


def points(spec: BenchSpec) -> list[ServePoint]:
    """The session's load points, in the order each run measures them."""
    if spec.request_rates:
        return [ServePoint("rate", r) for r in spec.request_rates]
    return [ServePoint("concurrency", str(c)) for c in spec.concurrencies or DEFAULT_CONCURRENCIES]


def server_argv(spec: BenchSpec, model: ModelArgs, python: str) -> list[str]:
    """`vllm serve MODEL` on loopback at the port the guest fills in; --extra goes here (engine flags)."""
    argv = [python, *VLLM_CLI, "serve", model.model, "--host", HOST, "--port", PORT, "--seed", str(spec.seed),
            "--tensor-parallel-size", str(spec.tp)]
    if model.load_format:
        argv += ["--load-format", model.load_format]
    if model.tokenizer:
        argv += ["--tokenizer", model.tokenizer]
    return [*argv, *spec.extra]


def bench_argv(spec: BenchSpec, point: ServePoint, model: ModelArgs, python: str, result: str) -> list[str]:
    """`vllm bench serve` for one load point: the random dataset at fixed lengths (range ratio 0) from the model's
    own tokenizer (nothing else downloaded), every request to its full length (--ignore-eos, greedy), warm-up
    requests first, p50 and p99 of TTFT/TPOT/ITL, the result to ``result``.

    The flags are those of `vllm bench serve` in 0.13.0, 0.24.0 and 0.33.0 (tests/bench/test_serve_cli.py parses
    them with each release's own parser)."""
    argv = [python, *VLLM_CLI, "bench", "serve", "--model", model.model]
    if model.tokenizer:
        argv += ["--tokenizer", model.tokenizer]
    return [*argv, "--host", HOST, "--port", PORT, "--dataset-name", "random",
            "--random-input-len", str(spec.input_len), "--random-output-len", str(spec.output_len),
            "--random-range-ratio", "0", "--num-prompts", str(spec.num_prompts), "--ignore-eos", "--temperature", "0",
            "--seed", str(spec.seed), "--num-warmups", str(spec.warmup_iters),
            "--percentile-metrics", "ttft,tpot,itl", "--metric-percentiles", PERCENTILES, *point.flags(),
            "--disable-tqdm", "--save-result", "--result-filename", result]


@dataclass(frozen=True)
class PlannedPoint:
    """One `vllm bench serve` of a run: its load point, command line and files (runtime paths)."""

    label: str
    run_id: str
    argv: tuple[str, ...]
    result: str
    log: str


@dataclass(frozen=True)
class PlannedServeRun:
    """One server of one arm through every load point: what the guest (serve_run.py) reads, and where it writes."""

    index: int
    arm: str
    repeat: int
    run_id: str
    env: dict[str, str]
    server_argv: tuple[str, ...]
    points: tuple[PlannedPoint, ...]
    server_log: str
    status: str  # the guest's report: port, server pid, health, each point's exit, the error if any
    pid_file: str  # what a stop from outside (Ctrl-C on the docker runtime) kills
    run_file: str  # this run as JSON, the guest's one argument
    counts_pattern: str
    hook_dir: str
    port: int
    server_timeout_s: float
    point_timeout_s: float
    mode: str = SERVE

    def guest_doc(self) -> dict[str, Any]:
        """What serve_run.py reads from ``run_file``."""
        return {"server": list(self.server_argv), "host": HOST, "port": self.port, "port_placeholder": PORT,
                "health_timeout_s": self.server_timeout_s, "server_log": self.server_log, "status": self.status,
                "pid_file": self.pid_file, "hook": self.hook_dir, "point_timeout_s": self.point_timeout_s,
                "points": [{"label": p.label, "argv": list(p.argv), "result": p.result, "log": p.log}
                           for p in self.points]}

    def command(self, python: str, places: Places) -> list[str]:
        return [python, places.guest_script(GUEST_SCRIPT), "--run", self.run_file]

    def stop_command(self, python: str, places: Places) -> list[str]:
        """Stops this run's server (and its guest) from outside, as the pid file names them; a no-op when gone."""
        return [python, places.guest_script(GUEST_SCRIPT), "--stop", self.pid_file]


def plan_runs(spec: BenchSpec, session: str, places: Places, model: ModelArgs, python: str,
              kernels_digest: str = "") -> list[PlannedServeRun]:
    """Every server run of the session, in execution order: arms ABBA, ``repeats`` each, all points per run."""
    runs_dir = posix(session_dir(places, session), "runs")
    seen = {arm: 0 for arm in ARMS}
    out: list[PlannedServeRun] = []
    for arm in arm_order(spec.repeats):
        repeat = seen[arm]
        seen[arm] += 1
        run_id = f"{SERVE}-{arm}-r{repeat}"
        counts = posix(runs_dir, f"{run_id}.counts-{{pid}}.json")
        planned = tuple(PlannedPoint(
            label=p.label, run_id=f"{run_id}-{p.slug}",
            argv=tuple(bench_argv(spec, p, model, python, posix(runs_dir, f"{run_id}-{p.slug}.json"))),
            result=posix(runs_dir, f"{run_id}-{p.slug}.json"), log=posix(runs_dir, f"{run_id}-{p.slug}.log"))
            for p in points(spec))
        out.append(PlannedServeRun(
            index=len(out), arm=arm, repeat=repeat, run_id=run_id,
            env={**arm_env(spec, arm, places, kernels_digest), COUNTS_ENV: counts},
            server_argv=tuple(server_argv(spec, model, python)), points=planned,
            server_log=posix(runs_dir, f"{run_id}.server.log"), status=posix(runs_dir, f"{run_id}.status.json"),
            pid_file=posix(runs_dir, f"{run_id}.pid.json"), run_file=posix(runs_dir, f"{run_id}.run.json"),
            counts_pattern=counts, hook_dir=posix(places.guest, HOOK), port=spec.port,
            server_timeout_s=spec.server_timeout_s, point_timeout_s=spec.point_timeout_s))
    return out


# --- what a run left behind -----------------------------------------------------------------------------

# Our metric -> the key `vllm bench serve --save-result` writes (0.13.0 to 0.33.0; median_* is always there,
# p99_* because the plan asks for --metric-percentiles 50,99).
# The first two are what the progress line shows per point.
RESULT_KEYS = {"tpot_p50_ms": "median_tpot_ms", "output_throughput_tok_s": "output_throughput",
               "tpot_p99_ms": "p99_tpot_ms", "ttft_p50_ms": "median_ttft_ms", "ttft_p99_ms": "p99_ttft_ms",
               "itl_p50_ms": "median_itl_ms", "itl_p99_ms": "p99_itl_ms",
               "request_throughput_req_s": "request_throughput", "duration_s": "duration"}


def parse_result(data: dict[str, Any]) -> dict[str, float]:
    """The metrics of one point from `vllm bench serve --save-result`'s JSON; a point where requests failed is
    an error (its latencies would describe the requests that happened to succeed)."""
    try:
        metrics = {ours: float(data[theirs]) for ours, theirs in RESULT_KEYS.items()}
        completed, failed = int(data["completed"]), int(data.get("failed") or 0)
    except (KeyError, TypeError, ValueError) as err:
        raise WorkbenchError(f"serve result JSON lacks {err}: is it from `vllm bench serve --save-result` with "
                             f"--metric-percentiles {PERCENTILES}?") from None
    if failed or not completed:
        raise WorkbenchError(f"{failed} of {completed + failed} requests failed: read the point's .log and the "
                             "server log")
    return metrics


def collect(to_host: Callable[[str], Path], run: PlannedServeRun, status: dict[str, Any], first_index: int,
            ) -> list[RunResult]:
    """One record per load point of a finished run, each with the run's counter dumps (one server served them)."""
    files = list(to_host(run.counts_pattern).parent.glob(Path(run.counts_pattern).name.replace("{pid}", "*")))
    counts = read_counts(files) if files else None
    done = {p.get("label"): p for p in status.get("points", []) if isinstance(p, dict)}
    out = []
    for i, point in enumerate(run.points):
        got = done.get(point.label, {})
        rc = int(got.get("returncode", -1))
        result = RunResult(run_id=point.run_id, mode=SERVE, arm=run.arm, repeat=run.repeat, index=first_index + i,
                           returncode=rc, started=float(got.get("started", 0.0)),
                           seconds=float(got.get("seconds", 0.0)),
                           argv=list(point.argv), env=run.env, counts=counts, point=point.label)
        out_file = to_host(point.result)
        if not got:
            result.error = "not run: the server run stopped before this point"
        elif rc != 0:
            result.error = f"vllm bench serve exited {rc}; see {Path(point.log).name}"
        elif not out_file.is_file():
            result.error = f"no result JSON at {out_file.name}"
        else:
            try:
                result.metrics = parse_result(json.loads(out_file.read_text()))
            except (WorkbenchError, json.JSONDecodeError) as err:
                result.error = f"{err} ({Path(point.log).name})"
        out.append(result)
    return out


def read_status(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def server_error(status: dict[str, Any], returncode: int, server_log: Path, where: str) -> WorkbenchError | None:
    """The one line for a server that could not serve (port taken, exited, never healthy), or for a guest that
    died without saying why; None when the server served."""
    error = status.get("error") if isinstance(status.get("error"), dict) else None
    if error is None and returncode == 0:
        return None
    kind = (error or {}).get("kind", "")
    detail = (error or {}).get("detail", "")
    port = status.get("port") or (error or {}).get("port")
    if kind == "port_in_use":
        return WorkbenchError(f"port {port} is already in use on {where}", "pass another --port, or leave --port "
                              "out to take a free one")
    if kind == "server_exited":
        return WorkbenchError(f"vllm serve exited with code {(error or {}).get('returncode')} before it was healthy"
                              f"{f' ({detail})' if detail else ''}", f"read its log {server_log}")
    if kind == "server_died":
        return WorkbenchError(f"vllm serve died during the run ({detail})", f"read its log {server_log}")
    if kind == "point_timeout":
        point_log = (error or {}).get("log")
        return WorkbenchError(f"vllm serve stopped answering: {detail}",
                              f"read its log {server_log} and the point's {point_log}; raise --point-timeout if a "
                              f"point is only slow; the finished runs are kept: invoke bench.summary "
                              f"{Path(server_log).parent.parent.name}")
    if kind == "never_healthy":
        return WorkbenchError(f"vllm serve was not healthy within {float(status.get('health_timeout_s', 0)):g} s",
                              f"raise --server-timeout if the model loads slowly, or read its log {server_log}")
    return WorkbenchError(f"the serve run exited {returncode}{f' ({detail})' if detail else ''}",
                          f"read {server_log} and the guest's output above")


def per_arm_medians(records: Sequence[RunResult]) -> dict[str, dict[str, dict[str, float]]]:
    """arm -> point -> metric -> median over the arm's runs: the numbers the latency-throughput plot draws."""
    from workbench.bench.stats import median

    out: dict[str, dict[str, dict[str, float]]] = {}
    for r in records:
        if r.mode != SERVE or not r.metrics:
            continue
        out.setdefault(r.arm, {}).setdefault(r.point, {})
    for arm, by_point in out.items():
        for point in by_point:
            runs = [r.metrics for r in records if r.mode == SERVE and r.arm == arm and r.point == point and r.metrics]
            by_point[point] = {k: median([m[k] for m in runs]) for k in runs[0]}
    return out


def write_run_file(to_host: Callable[[str], Path], run: PlannedServeRun) -> Path:
    path = to_host(run.run_file)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(run.guest_doc(), indent=1))
    return path
