"""Serve mode on CPU with real processes: the stand-in `vllm serve` (tests/support/standin_vllm.py) is a real HTTP
server with an engine-core child, the stand-in `vllm bench serve` sends it real requests, and the result is saved
by vLLM 0.24.0's own code. A whole session through the host runtime; the server's lifecycle (a port in use, a
server that exits or never gets healthy, Ctrl-C, a stop from outside) with the pids checked afterwards; the plan.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest

from support import standin_vllm
from workbench.bench import index, plan, results, serve, session, verdict
from workbench.config import Settings
from workbench.errors import WorkbenchError
from workbench.runtime import HostRuntime, Places

ROOT = Path(__file__).resolve().parents[2]
KERNELS = ROOT / "custom_kernels" / "src"
GUEST = ROOT / "workbench" / "guest" / serve.GUEST_SCRIPT
PLACES = Places(fork="/w/vllm", kernels="/w/ck", patches="/w/patches", results="/w/results", wheels="/w/wheels",
                guest="/w/guest", state="/opt/workbench", hf_cache="/cache/hf", ccache="/cache/ccache")


# --- the plan ----------------------------------------------------------------------------------------------

def test_each_run_is_one_arms_server_through_every_point_in_abba_order():
    spec = plan.validate_spec(plan.BenchSpec(mode="serve", repeats=2, concurrencies=(1, 8), port=8123,
                                             gemm_layers="*.mlp.*"))
    runs = serve.plan_runs(spec, "S", PLACES, plan.ModelArgs("m"), "python", "0123456789abcdef")
    assert [r.arm for r in runs] == ["baseline", "custom", "custom", "baseline"]
    assert [r.env[plan.GEMM_SWITCH] for r in runs] == ["0", "1", "1", "0"]
    assert all(r.env[plan.LAYERS_ENV] == "*.mlp.*" for r in runs)
    assert runs[1].env["VLLM_CACHE_ROOT"].endswith("custom-0123456789ab")  # the arm's own compile cache
    assert runs[0].env[plan.COUNTS_ENV] == "/w/results/S/runs/serve-baseline-r0.counts-{pid}.json"
    assert [p.label for p in runs[0].points] == ["c=1", "c=8"]
    assert [p.argv[p.argv.index("--max-concurrency") + 1] for p in runs[0].points] == ["1", "8"]
    files = [f for r in runs for f in (r.server_log, r.status, r.pid_file, r.run_file,
                                       *(x for p in r.points for x in (p.result, p.log)))]
    assert len(set(files)) == len(files)  # no run overwrites another's files
    doc = runs[0].guest_doc()
    assert doc["port"] == 8123 and doc["server"] == list(runs[0].server_argv) and doc["hook"] == "/w/guest/hook"
    assert runs[0].command("python", PLACES) == ["python", "/w/guest/serve_run.py", "--run", runs[0].run_file]
    # A/A: both arms the baseline, in the same order and files.
    aa = serve.plan_runs(replace(spec, aa=True), "S", PLACES, plan.ModelArgs("m"), "python")
    assert [r.env[plan.GEMM_SWITCH] for r in aa] == ["0", "0", "0", "0"]
    assert [r.arm for r in aa] == [r.arm for r in runs]


def test_server_and_client_argv():
    spec = plan.validate_spec(plan.BenchSpec(mode="serve", request_rates=("1", "inf"), input_len=64, output_len=32,
                                             num_prompts=50, extra=("--enforce-eager",)))
    model = plan.ModelArgs("/m", "dummy", "/m/tokenizer")
    server = serve.server_argv(spec, model, "py")
    assert server[:5] == ["py", "-m", "vllm.entrypoints.cli.main", "serve", "/m"]
    assert server[server.index("--port") + 1] == serve.PORT and server[server.index("--host") + 1] == "127.0.0.1"
    assert server[-1] == "--enforce-eager"  # --extra is for the server (engine flags)
    points = serve.points(spec)
    assert [(p.label, p.slug, p.flags()) for p in points] == [
        ("rate=1", "rate1", ["--request-rate", "1"]), ("rate=inf", "rateinf", ["--request-rate", "inf"])]
    client = serve.bench_argv(spec, points[1], model, "py", "/r/x.json")
    assert "--enforce-eager" not in client and client[client.index("--tokenizer") + 1] == "/m/tokenizer"
    for flag, value in (("--random-input-len", "64"), ("--random-output-len", "32"), ("--num-prompts", "50"),
                        ("--result-filename", "/r/x.json"), ("--port", serve.PORT), ("--random-range-ratio", "0")):
        assert client[client.index(flag) + 1] == value
    assert {"--ignore-eos", "--save-result"} <= set(client)
    assert serve.points(plan.BenchSpec(mode="serve")) == [serve.ServePoint("concurrency", str(c))
                                                          for c in serve.DEFAULT_CONCURRENCIES]


@pytest.mark.parametrize("spec, message", [
    (plan.BenchSpec(mode="serve", request_rates=("1",), concurrencies=(2,)), "both given"),
    (plan.BenchSpec(mode="serve", driver="paired"), "drop --driver"),
    (plan.BenchSpec(mode="serve", concurrencies=(8, 8)), "repeat one"),
    (plan.BenchSpec(mode="serve", port=70000), "--port 70000"),
    (plan.BenchSpec(mode="latency", concurrencies=(8,)), "add --mode serve"),
    (plan.BenchSpec(mode="serve", extra=("--port", "9")), "must not set --port"),
    (plan.BenchSpec(admission="whole"), "add --driver paired"),
    (plan.BenchSpec(driver="paired", admission="all"), "--admission 'all' is not one of whole, stream"),
])
def test_bad_serve_requests_are_refused(spec, message):
    with pytest.raises(WorkbenchError, match=message):
        plan.validate_spec(spec)


def test_load_point_lists():
    assert serve.parse_rates("1, 4.0,inf,INF") == ("1", "4", "inf", "inf")
    assert serve.parse_concurrencies("1,8,32") == (1, 8, 32)
    for bad in ("0", "-1", "x", "nan"):
        with pytest.raises(WorkbenchError, match="--request-rates"):
            serve.parse_rates(bad)
    for bad in ("0", "1.5", "x"):
        with pytest.raises(WorkbenchError, match="--concurrencies"):
            serve.parse_concurrencies(bad)


# --- statistics per load point ------------------------------------------------------------------------------

def _point_record(arm: str, point: str, repeat: int, tpot: float, calls: int) -> results.RunResult:
    metrics = {d.key: tpot for d in results.METRICS["serve"]}
    return results.RunResult(run_id=f"serve-{arm}-r{repeat}-{point}", mode="serve", arm=arm, repeat=repeat, index=0,
                             returncode=0, started=0.0, seconds=1.0, argv=[], env={}, metrics=metrics, point=point,
                             counts={"total_calls": calls, "processes": 2, "processes_with_custom_kernels": 1,
                                     "errors": [], "call_counts": {}, "kernel_counts": {}})


def test_an_aa_serve_session_records_a_floor_per_load_point(tmp_path):
    aa = [_point_record(arm, p, r, 10.0 + 0.05 * r + (0.1 if arm == "custom" else 0), 0)
          for r in range(4) for arm in plan.ARMS for p in ("c=1", "c=8")]
    (tmp_path / "AA" / "runs").mkdir(parents=True)
    out = session.summarize_session(tmp_path / "AA", aa, {"spec": {"model": "tiny", "mode": "serve", "aa": True}},
                                    results_root=tmp_path)
    assert out.validity.valid and out.floors_path is not None
    floors = json.loads(out.floors_path.read_text())["floors"]
    assert set(floors) == {verdict.floor_key("unknown GPU", "tiny", f"serve {p}") for p in ("c=1", "c=8")}
    # The next A/B on that GPU and model is judged per point by them.
    ab = [_point_record(arm, p, r, 10.0 + 0.01 * r - (0.5 if arm == "custom" else 0), 5 if arm == "custom" else 0)
          for r in range(4) for arm in plan.ARMS for p in ("c=1", "c=8")]
    (tmp_path / "AB" / "runs").mkdir(parents=True)
    out = session.summarize_session(tmp_path / "AB", ab, {"spec": {"model": "tiny", "mode": "serve"}},
                                    results_root=tmp_path)
    summary = json.loads(out.summary_path.read_text())
    assert summary["floor_sources"]["serve c=8"] == "A/A AA"
    rows = {(c["mode"], c["metric"]): c for c in summary["comparisons"]}
    assert set(rows) == {(f"serve {p}", d.key) for p in ("c=1", "c=8") for d in results.METRICS["serve"]}
    tpot = rows[("serve c=1", "tpot_p50_ms")]
    assert tpot["custom_median"] < tpot["baseline_median"] and tpot["ratio_ci"][1] < 1.0
    assert tpot["floor_pct"] == floors[verdict.floor_key("unknown GPU", "tiny", "serve c=1")]["metrics"]["tpot_p50_ms"]
    assert tpot["verdict"] == "custom faster"  # 5% lower TPOT, every run, beyond the A/A floor
    assert summary["serve"]["points"] == ["c=1", "c=8"]
    assert summary["serve"]["medians"]["custom"]["c=1"]["tpot_p50_ms"] == pytest.approx(9.515)
    assert index.mode_verdicts(summary, ["serve"]) == {"serve c=1": "custom faster", "serve c=8": "custom faster"}
    # bench.compare of two serve sessions: their custom arms, point by point, from the saved records.
    for name, recs in (("AA", aa), ("AB", ab)):
        for r in recs:
            results.save_record(tmp_path / name, replace(r, run_id=f"{r.run_id}-{id(r)}"))
    rows, _, _ = session.compare_sessions(tmp_path / "AA", tmp_path / "AB")
    assert [m for m, c in rows if c.metric == "tpot_p50_ms"] == ["serve c=1", "serve c=8"]


def test_without_matplotlib_the_plot_is_skipped_with_one_line(tmp_path, monkeypatch):
    from rich.console import Console

    from workbench.bench import report
    from workbench.tasks import bench as bench_task

    monkeypatch.setitem(sys.modules, "matplotlib", None)  # what `import matplotlib` meets where it is not installed
    records = [_point_record(arm, "c=1", r, 10.0 + r, 3 if arm == "custom" else 0) for r in range(2)
               for arm in plan.ARMS]
    (tmp_path / "S" / "runs").mkdir(parents=True)
    outcome = session.summarize_session(tmp_path / "S", records, {"spec": {"model": "tiny", "mode": "serve"}})
    assert outcome.chart_path is None and json.loads(outcome.summary_path.read_text())["serve"]["plot"] is None
    console = Console(record=True, width=200)
    bench_task._report(console, outcome, False, report)
    text = console.export_text()
    assert text.count(report.PLOT_MISSING) == 1 and "TPOT p50" in text and "serve c=1" in text


# --- real processes ----------------------------------------------------------------------------------------



@pytest.fixture
def standin(tmp_path, monkeypatch) -> dict[str, str]:
    """The stand-in vLLM first on PYTHONPATH, custom_kernels importable as if installed; vLLM 0.24.0's result code."""
    from support.vllm_source import vllm_source_tree

    site = standin_vllm.site(tmp_path / "site")
    env = {"PYTHONPATH": os.pathsep.join([str(site), str(KERNELS)]),
           "STANDIN_VLLM_TREE": str(vllm_source_tree("0.24.0")), "STANDIN_PLUGIN": "honors",
           "WORKBENCH_MODEL_DEVICE": "cpu"}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    return env


def _alive(pid: int) -> bool:
    """A live (not zombie) process with this pid."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _servers(tmp_path: Path) -> list[int]:
    """Live stand-in servers started for this test (their argv names its folder)."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"serve" in argv and any(str(tmp_path).encode() in a for a in argv) and proc.name.isdigit() \
                and _alive(int(proc.name)):
            found.append(int(proc.name))
    return found


@pytest.mark.vllm_source
def test_serve_session_end_to_end(tmp_path, tiny, standin):
    settings = Settings.from_mapping(ROOT, {"results": str(tmp_path / "results"), "runtime": "host",
                                            "python": sys.executable})
    spec = plan.validate_spec(plan.BenchSpec(model=tiny, mode="serve", repeats=2, concurrencies=(1, 4), num_prompts=6,
                                             input_len=16, output_len=6, warmup_iters=1, gate_prompts=2, gate_tokens=4))
    outcome = session.run_session(HostRuntime(settings), ROOT, "S", spec, sample_gpu=False)
    assert outcome.validity.valid, outcome.validity.reasons
    out = tmp_path / "results" / "S"
    # Four servers, ABBA, each through both points; every one stopped, its log kept.
    statuses = [json.loads((out / "runs" / f"serve-{arm}-r{k}.status.json").read_text())
                for arm, k in (("baseline", 0), ("custom", 0), ("custom", 1), ("baseline", 1))]
    assert [s["server_stop"] for s in statuses] == ["stopped (SIGTERM)"] * 4
    assert all(not _alive(s["server_pid"]) for s in statuses) and not _servers(tmp_path)
    assert len({s["port"] for s in statuses}) >= 1 and all(s["error"] is None for s in statuses)
    assert "stand-in vllm serve" in (out / "runs" / "serve-custom-r1.server.log").read_text()
    assert not list((out / "runs").glob("*.pid.json"))
    # The engine-core children of the custom arm's servers made the calls, the baseline's none.
    assert all(c and c > 0 for c in outcome.validity.custom_calls) and set(outcome.validity.baseline_calls) == {0}
    records = results.load_records(out)
    assert [(r.arm, r.point) for r in records][:4] == [("baseline", "c=1"), ("baseline", "c=4"), ("custom", "c=1"),
                                                       ("custom", "c=4")]
    assert all(r.metrics["ttft_p50_ms"] > 0 and r.metrics["output_throughput_tok_s"] > 0 for r in records)
    summary = json.loads(outcome.summary_path.read_text())
    assert {c["mode"] for c in summary["comparisons"]} == {"serve c=1", "serve c=4"}
    assert all(len(c["ratio_ci"]) == 2 and c["n_baseline"] == 2 for c in summary["comparisons"])
    assert summary["floor_sources"]["serve c=4"].startswith("default") and summary["gate"]["valid"]
    medians = summary["serve"]["medians"]
    assert set(medians) == {"baseline", "custom"} and set(medians["custom"]) == {"c=1", "c=4"}
    if summary["serve"]["plot"]:
        assert (out / "serve.png").stat().st_size > 1000
    else:
        assert not __import__("importlib").util.find_spec("matplotlib")
    line = json.loads((tmp_path / "results" / "index.jsonl").read_text().splitlines()[-1])
    assert line["modes"] == ["serve"] and set(line["verdicts"]) == {"serve c=1", "serve c=4"}
    # What bench.compare and bench.export read back of a serve session.
    assert session.summarize_session(out, records).validity.valid
    from workbench.bench import export

    csv_path, n = export.export_csv(out)
    assert n == 8 and "point" in csv_path.read_text().splitlines()[0].split(",")


@pytest.mark.vllm_source
def test_a_budgeted_serve_session_starts_no_server_past_it(tmp_path, tiny, standin):
    settings = Settings.from_mapping(ROOT, {"results": str(tmp_path / "results"), "runtime": "host",
                                            "python": sys.executable})
    spec = plan.validate_spec(plan.BenchSpec(model=tiny, mode="serve", repeats=2, concurrencies=(1,), num_prompts=2,
                                             input_len=8, output_len=2, warmup_iters=0, gate=False, budget_min=1e-4))
    outcome = session.run_session(HostRuntime(settings), ROOT, "SB", spec, sample_gpu=False)
    # The first server's run took longer than the whole budget: no other server started, none is left running.
    assert [(r.arm, r.point) for r in outcome.records] == [("baseline", "c=1")] and not _servers(tmp_path)
    assert not (tmp_path / "results" / "SB" / "runs" / "serve-custom-r0.status.json").exists()
    assert json.loads(outcome.summary_path.read_text())["budget"] == {"minutes": 1e-4, "runs_not_started": 3}


def _invoke(args: list[str], tmp_path: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    full = {**os.environ, **env, "INVOKE_WORKBENCH_RESULTS": str(tmp_path / "results"),
            "INVOKE_WORKBENCH_RUNTIME": "host", "INVOKE_WORKBENCH_PYTHON": sys.executable}
    return subprocess.run([sys.executable, "-m", "invoke", "bench", "--mode", "serve", "--no-gate", "--repeats", "1",
                           *args], cwd=ROOT, capture_output=True, text=True, timeout=300, env=full)


def _one_error_line(done: subprocess.CompletedProcess) -> str:
    assert done.returncode == 1, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    return lines[0]


def test_a_port_in_use_is_one_line_and_starts_nothing(tmp_path, tiny, standin):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = _invoke(["--model", tiny, "--port", str(port)], tmp_path, standin)
    line = _one_error_line(done)
    assert line.startswith(f"error: port {port} is already in use on this host") and "pass another --port" in line
    (status,) = (tmp_path / "results").glob("*/runs/serve-baseline-r0.status.json")
    assert json.loads(status.read_text())["error"]["kind"] == "port_in_use"
    assert "server_pid" not in json.loads(status.read_text()) and not _servers(tmp_path)


@pytest.mark.parametrize("behaviour, timeout, expected", [
    ("never_healthy", "2", "vllm serve was not healthy within 2 s: raise --server-timeout"),
    # A timeout the exit comes well before, however loaded the machine.
    ("exit_early", "120", "vllm serve exited with code 1 before it was healthy (RuntimeError: Engine core init"),
])
def test_a_server_that_cannot_serve_is_one_line_with_its_log(tmp_path, tiny, standin, behaviour, timeout, expected):
    done = _invoke(["--model", tiny, "--server-timeout", timeout], tmp_path, {**standin, "STANDIN_SERVE": behaviour})
    line = _one_error_line(done)
    assert line.startswith(f"error: {expected}"), line
    (log,) = (tmp_path / "results").glob("*/runs/serve-baseline-r0.server.log")
    assert line.endswith(f"read its log {log}") and "stand-in vllm serve" in log.read_text()
    status = json.loads(log.with_name("serve-baseline-r0.status.json").read_text())
    assert not _alive(status["server_pid"]) and not _servers(tmp_path)
    assert status["server_stop"] == ("stopped (SIGTERM)" if behaviour == "never_healthy" else "exited before the stop")


def test_a_point_past_its_timeout_stops_the_run_as_a_hung_server(tmp_path, tiny, standin):
    done = _invoke(["--model", tiny, "--concurrencies", "1", "--num-prompts", "2", "--point-timeout", "4"], tmp_path,
                   {**standin, "STANDIN_SERVE": "hang"})
    line = _one_error_line(done)
    assert line.startswith("error: vllm serve stopped answering: load point c=1 did not finish within 4 s"), line
    assert "raise --point-timeout" in line and "bench.summary" in line
    (status_file,) = (tmp_path / "results").glob("*/runs/serve-baseline-r0.status.json")
    status = json.loads(status_file.read_text())
    assert status["points"][0]["timed_out"] and status["server_stop"] == "stopped (SIGTERM)"
    assert not _servers(tmp_path)  # the hung server and its waiting client are both gone


def _wait_for(predicate, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


@pytest.mark.vllm_source
@pytest.mark.parametrize("target", ["group", "guest first"])
def test_ctrl_c_stops_the_server(tmp_path, tiny, standin, target):
    """Ctrl-C in a terminal: SIGINT to the foreground process group (invoke and the guest; the server has its own).
    Which of the two acts on it first is up to the scheduler: "guest first" is the order where invoke sees the guest
    exit interrupted before its own KeyboardInterrupt (seen on a loaded machine), forced by signalling the guest
    alone; both end as an interruption, exit 130."""
    full = {**os.environ, **standin, "INVOKE_WORKBENCH_RESULTS": str(tmp_path / "results"),
            "INVOKE_WORKBENCH_RUNTIME": "host", "INVOKE_WORKBENCH_PYTHON": sys.executable}
    proc = subprocess.Popen([sys.executable, "-m", "invoke", "bench", "--mode", "serve", "--no-gate", "--repeats", "1",
                             "--model", tiny, "--concurrencies", "1", "--num-prompts", "500", "--output-len", "64"],
                            cwd=ROOT, env=full, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        logs = tmp_path / "results"
        _wait_for(lambda: any(p.read_text().count("/v1/completions") > 3 for p in logs.glob("*/runs/*.server.log")))
        if target == "group":
            os.killpg(proc.pid, signal.SIGINT)
        else:
            (pid_file,) = logs.glob("*/runs/serve-baseline-r0.pid.json")
            os.kill(json.loads(pid_file.read_text())["guest_pid"], signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130 and "interrupted" in err and "Traceback" not in err, (proc.returncode, err[-2000:])
    (status,) = logs.glob("*/runs/serve-baseline-r0.status.json")
    data = json.loads(status.read_text())
    assert data["error"]["kind"] == "interrupted" and data["server_stop"] == "stopped (SIGTERM)"
    assert not _alive(data["server_pid"]) and not _servers(tmp_path)


@pytest.mark.vllm_source
def test_a_stop_from_outside_ends_the_run_and_its_server(tmp_path, tiny, standin):
    """What invoke does after Ctrl-C on the docker runtime (a docker exec passes no signal on): serve_run.py --stop."""
    runs = tmp_path / "runs"
    runs.mkdir()
    model = str(tmp_path / "m")  # in both argvs: _servers() finds what is left of them by it
    client = [sys.executable, "-m", "vllm.entrypoints.cli.main", "bench", "serve", "--model", model, "--port",
              serve.PORT, "--random-input-len", "8", "--random-output-len", "64", "--num-prompts", "1000",
              "--max-concurrency", "1", "--save-result", "--result-filename", str(runs / "p.json")]
    doc = {"server": [sys.executable, "-m", "vllm.entrypoints.cli.main", "serve", model, "--host", serve.HOST, "--port",
                      serve.PORT], "host": serve.HOST, "port": 0, "port_placeholder": serve.PORT,
           "health_timeout_s": 60, "server_log": str(runs / "s.log"), "status": str(runs / "status.json"),
           "pid_file": str(runs / "pid.json"), "hook": str(ROOT / "workbench" / "guest" / "hook"),
           "points": [{"label": "c=1", "argv": client, "result": str(runs / "p.json"), "log": str(runs / "p.log")}]}
    (runs / "run.json").write_text(json.dumps(doc))
    guest = subprocess.Popen([sys.executable, str(GUEST), "--run", str(runs / "run.json")], cwd=tmp_path,
                             stdout=subprocess.DEVNULL, start_new_session=True)
    try:
        _wait_for(lambda: (runs / "p.log").is_file() and (runs / "s.log").read_text().count("/v1/completions") > 3)
        pids = json.loads((runs / "pid.json").read_text())
        assert pids["guest_pid"] == guest.pid
        stop = subprocess.run([sys.executable, str(GUEST), "--stop", str(runs / "pid.json")], timeout=120)
        assert stop.returncode == 0
        assert guest.wait(timeout=10) == 130
    finally:
        if guest.poll() is None:
            os.killpg(guest.pid, signal.SIGKILL)
    status = json.loads((runs / "status.json").read_text())
    assert status["error"] == {"kind": "interrupted", "detail": "SIGTERM received"}
    assert status["server_stop"] == "stopped (SIGTERM)" and not _alive(pids["server_pgid"])
    assert not (runs / "pid.json").exists() and not _servers(tmp_path)
    # Stopping a run that already ended is a no-op.
    assert subprocess.run([sys.executable, str(GUEST), "--stop", str(runs / "pid.json")], timeout=30).returncode == 0


def test_dry_run_prints_every_server_and_client_and_writes_nothing(tmp_path):
    env = {**os.environ, "INVOKE_WORKBENCH_RESULTS": str(tmp_path / "results")}
    done = subprocess.run([sys.executable, "-m", "invoke", "bench", "--mode", "serve", "--dry-run", "--runtime", "host",
                           "--repeats", "2", "--concurrencies", "1,8", "--model", "qwen2.5-0.5b"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr
    assert "4 server runs, ABBA order, each through the load points c=1, c=8 on a free port" in done.stdout
    assert done.stdout.count("vllm.entrypoints.cli.main serve ") == 4
    assert done.stdout.count("vllm.entrypoints.cli.main bench serve ") == 8
    assert done.stdout.count("VLLM_USE_CUSTOM_GEMM=1") == 2 + 1  # two custom runs and the custom gate
    assert not (tmp_path / "results").exists()


@pytest.mark.parametrize("args, message", [
    (("--concurrencies", "x"), "--concurrencies 'x': 'x' is not a whole number >= 1"),
    (("--request-rates", "0"), "--request-rates '0': '0' is not a positive number or inf"),
    (("--server-timeout", "0"), "--server-timeout '0' must be greater than 0"),
    (("--port", "-1"), "--port '-1' must be at least 0"),
])
def test_bad_serve_flags_are_one_line(args, message):
    done = subprocess.run([sys.executable, "-m", "invoke", "bench", "--mode", "serve", "--dry-run", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 1 and len(lines) == 1 and lines[0].startswith(f"error: {message}"), done.stderr
