"""invoke bench: the planner, the counter hook across real processes, validity, result parsing against
vLLM 0.13.0's own JSON code, a whole session through a local executor, --compare, the task CLI."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from workbench import bench, bench_session
from workbench.errors import WorkbenchError

ROOT = Path(__file__).resolve().parent.parent
KERNELS = ROOT / "custom_kernels"
STANDIN = ROOT / "tests" / "support" / "standin_vllm.py"


# --- planner ---------------------------------------------------------------------------------------

def test_arm_order_is_abba_and_balanced():
    assert bench.arm_order(3) == ["baseline", "custom", "custom", "baseline", "baseline", "custom"]
    order = bench.arm_order(5)
    assert order.count("baseline") == order.count("custom") == 5


def test_plan_runs_same_args_and_seed_for_both_arms():
    spec = bench.BenchSpec(model="Qwen/Qwen2.5-0.5B", mode="both", repeats=2, extra=("--enforce-eager",))
    runs = bench.plan_runs(spec, "S")
    assert [r.mode for r in runs] == ["latency"] * 4 + ["throughput"] * 4
    for mode in bench.MODES:
        mine = [r for r in runs if r.mode == mode]
        stripped = {tuple(a for a in r.argv if not a.endswith(".json")) for r in mine}
        assert len(stripped) == 1, "both arms and all repeats must pass identical vLLM arguments"
        assert {r.env[bench.GEMM_SWITCH] for r in mine if r.arm == "custom"} == {"1"}
        assert {r.env[bench.GEMM_SWITCH] for r in mine if r.arm == "baseline"} == {"0"}
        assert len({r.output_json for r in mine}) == len(mine)
    lat = runs[0].argv
    assert lat[:3] == ("vllm", "bench", "latency")
    assert lat[lat.index("--seed") + 1] == "0" and "--enforce-eager" in lat
    assert lat[-2] == "--output-json" and lat[-1].startswith("/workspace/results/S/runs/")
    thr = runs[4].argv
    assert thr[thr.index("--dataset-name") + 1] == "random" and "--num-prompts" in thr
    assert all(r.env["VLLM_DISABLE_COMPILE_CACHE"] == "1" for r in runs)
    per_arm = bench.plan_runs(bench.BenchSpec(compile_cache="per-arm", repeats=1, gemm_layers="model.layers.0"), "S")
    assert {r.env["VLLM_CUSTOM_GEMM_LAYERS"] for r in per_arm} == {"model.layers.0"}
    assert {r.env["VLLM_CACHE_ROOT"] for r in per_arm} == {"/tmp/vllm-workbench-cache-baseline",
                                                           "/tmp/vllm-workbench-cache-custom"}
    cmd = runs[0].command()
    assert cmd[:2] == ["bash", "-c"] and "pipefail" in cmd[2] and "PYTHONPATH=/workspace/results/S/.hook" in cmd[2]


@pytest.mark.parametrize("change, message", [
    ({"mode": "fast"}, "--mode"), ({"repeats": 0}, "--repeats"), ({"extra": ("--seed", "3")}, "--seed"),
    ({"extra": ("--output-json=x",)}, "--output-json"), ({"compile_cache": "keep"}, "--compile-cache"),
])
def test_validate_spec_refuses_bad_input_with_the_fix(change, message):
    with pytest.raises(WorkbenchError, match=message):
        bench.validate_spec(bench.BenchSpec(**change))


def test_session_name_and_slug():
    assert bench.model_slug("meta-llama/Meta-Llama-3-8B") == "Meta-Llama-3-8B"
    assert bench.model_slug("/models/my model/") == "my_model"
    assert bench.session_name("Qwen/Qwen2.5-0.5B", now=0) == "19700101-000000-Qwen2.5-0.5B"


# --- the counter hook across real processes ---------------------------------------------------------

CHILDREN = r"""
import multiprocessing as mp, os, sys, torch
def engine(n):
    import custom_kernels
    layer = torch.nn.Linear(4, 4); layer.prefix = f"layer{n}"
    for _ in range(n):
        custom_kernels.unquantized_gemm(layer, torch.randn(2, 4), layer.weight, layer.bias)
if __name__ == "__main__":
    for method, n in (("fork", 3), ("spawn", 5)):
        p = mp.get_context(method).Process(target=engine, args=(n,)); p.start(); p.join()
        assert p.exitcode == 0
"""


def _hooked_env(tmp_path: Path, counts: str, **extra: str) -> dict[str, str]:
    hook = bench.write_hook(tmp_path / "session")
    env = {**os.environ, bench.COUNTS_ENV: counts, **extra}
    env["PYTHONPATH"] = os.pathsep.join([str(hook.parent), str(KERNELS), str(ROOT)])
    return env


def test_hook_dumps_counters_from_forked_and_spawned_children(tmp_path):
    counts = str(tmp_path / "runs" / "r.counts-{pid}.json")
    env = _hooked_env(tmp_path, counts)
    script = tmp_path / "engine.py"  # spawn re-imports __main__ from a file
    script.write_text(CHILDREN)
    subprocess.run([sys.executable, str(script)], env=env, check=True, cwd=tmp_path, timeout=300)
    files = list((tmp_path / "runs").glob("r.counts-*.json"))
    merged = bench.read_counts(files)
    assert merged["call_counts"] == {"layer3": 3, "layer5": 5}
    assert merged["total_calls"] == 8
    assert merged["processes"] >= 3  # parent + fork child + spawn child (+ spawn's resource tracker)
    assert merged["processes_with_custom_kernels"] == 2
    assert merged["errors"] == []


def test_hook_reports_when_custom_kernels_is_not_installed(tmp_path):
    counts = str(tmp_path / "runs" / "r.counts-{pid}.json")
    hook = bench.write_hook(tmp_path / "session")
    env = {**os.environ, bench.COUNTS_ENV: counts, "PYTHONPATH": str(hook.parent)}
    subprocess.run([sys.executable, "-c", "print('engine')"], env=env, check=True, cwd=tmp_path)
    merged = bench.read_counts((tmp_path / "runs").glob("*.json"))
    assert merged["total_calls"] == 0
    assert any("not installed" in e for e in merged["errors"])


def test_counts_dump_module(tmp_path, monkeypatch):
    sys.path.insert(0, str(KERNELS))
    try:
        import custom_kernels
        from custom_kernels import counts_dump
    finally:
        sys.path.remove(str(KERNELS))
    monkeypatch.setitem(custom_kernels.CALL_COUNTS, "layer.q", 4)
    path = counts_dump.dump_counts(tmp_path / "c-{pid}.json")
    data = json.loads(path.read_text())
    assert path.name == f"c-{os.getpid()}.json"
    assert data["call_counts"]["layer.q"] == 4 and data["custom_kernels_imported"] is True
    monkeypatch.delenv(counts_dump.ENV, raising=False)
    assert counts_dump.install_exit_dump() is None  # unset: nothing installed


# --- results parsing against the real 0.13.0 JSON ---------------------------------------------------

@pytest.fixture(scope="module")
def tree():
    from tests.support.vllm_source import vllm_source_tree

    return vllm_source_tree("0.13.0")


@pytest.mark.vllm_source
def test_parse_real_latency_json(tree, tmp_path):
    from tests.support.vllm_bench_json import write_latency_json

    lat = [0.5 + 0.01 * i for i in range(30)]
    raw = write_latency_json(tree, tmp_path / "lat.json", lat)
    assert set(raw) == {"avg_latency", "latencies", "percentiles"}
    metrics = bench.parse_run_json("latency", raw)
    assert metrics["p50_s"] == pytest.approx(sorted(lat)[14] * 0.5 + sorted(lat)[15] * 0.5)
    assert metrics["p90_s"] > metrics["p50_s"] and metrics["p99_s"] >= metrics["p90_s"]
    assert metrics["avg_latency_s"] == pytest.approx(sum(lat) / len(lat))


@pytest.mark.vllm_source
def test_parse_real_throughput_json(tree, tmp_path):
    from tests.support.vllm_bench_json import write_throughput_json

    raw = write_throughput_json(tree, tmp_path / "thr.json", elapsed_time_s=20.0, num_requests=200,
                                input_len=128, output_len=128)
    metrics = bench.parse_run_json("throughput", raw)
    assert metrics == {"tokens_per_second": 200 * 256 / 20.0, "requests_per_second": 10.0, "elapsed_time_s": 20.0}


def test_parse_refuses_foreign_json():
    with pytest.raises(WorkbenchError, match="lacks"):
        bench.parse_run_json("latency", {"tokens_per_second": 1.0})


# --- validity --------------------------------------------------------------------------------------

def _record(arm: str, calls: int | None, imported: int = 1, error: str = "", repeat: int = 0) -> bench.RunResult:
    counts = None if calls is None else {"total_calls": calls, "processes": 2, "processes_with_custom_kernels":
                                         imported, "errors": [], "call_counts": {}, "kernel_counts": {}}
    return bench.RunResult(run_id=f"latency-{arm}-r{repeat}", mode="latency", arm=arm, repeat=repeat, index=0,
                           returncode=0, started=0.0, seconds=1.0, argv=[], env={},
                           metrics={"p50_s": 1.0, "p90_s": 1.0, "p99_s": 1.0, "avg_latency_s": 1.0},
                           counts=counts, error=error)


def test_validity_rules():
    assert bench.check_validity([_record("baseline", 0), _record("custom", 12)]).valid
    v = bench.check_validity([_record("baseline", 0), _record("custom", 0, imported=0)])
    assert not v.valid and "no custom-kernel call" in v.reasons[0] and "never imported" in v.fixes[0]
    v = bench.check_validity([_record("baseline", 0), _record("custom", 0, imported=1)])
    assert "engine-core" in v.fixes[0] and "compile" in v.fixes[0]
    v = bench.check_validity([_record("baseline", 7), _record("custom", 7)])
    assert not v.valid and "baseline run(s) called" in v.reasons[0]
    v = bench.check_validity([_record("baseline", None), _record("custom", None)])
    assert not v.valid and "no counter dump" in v.reasons[0]
    v = bench.check_validity([_record("baseline", 0), _record("custom", 5, error="vllm bench exited 1")])
    assert not v.valid and "failed" in v.reasons[0]


# --- a whole session through a local executor -------------------------------------------------------

def local_executor(tmp_path: Path, tree: Path, plugin: str, mp_method: str = "fork"):
    """Runs the planned container commands on this host: /workspace/{results,scripts} mapped to local
    folders, `vllm` = the stand-in CLI, custom_kernels importable as if pip-installed."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "vllm").write_text(f"#!/bin/sh\nexec {sys.executable} {STANDIN} \"$@\"\n")
    (bin_dir / "vllm").chmod(0o755)
    # A script, not a symlink: a venv's interpreter started through a link outside the venv runs as the
    # base interpreter, without the venv's packages.
    (bin_dir / "python3").write_text(f"#!/bin/sh\nexec {sys.executable} \"$@\"\n")
    (bin_dir / "python3").chmod(0o755)
    results = tmp_path / "results"

    def mapped(text: str) -> str:
        return text.replace("/workspace/results", str(results)).replace("/workspace/scripts", str(ROOT / "scripts"))

    def run(cmd: list[str], env: dict[str, str]) -> int:
        full = {**os.environ, **{k: mapped(v) for k, v in env.items()}, "STANDIN_PLUGIN": plugin,
                "STANDIN_MP": mp_method, "STANDIN_VLLM_TREE": str(tree), "PYTHONPATH": str(KERNELS),
                "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
        return subprocess.run([mapped(c) for c in cmd], env=full, cwd=tmp_path, timeout=600).returncode

    return results, run


@pytest.mark.vllm_source
def test_session_valid_when_the_switch_routes_gemms(tree, tmp_path):
    results, run = local_executor(tmp_path, tree, "honors")
    spec = bench.BenchSpec(model="Qwen/Qwen2.5-0.5B", mode="both", repeats=1)
    outcome = bench_session.run_session(results, "S1", spec, run)
    assert outcome.validity.valid, outcome.validity.reasons
    assert all(c and c > 0 for c in outcome.validity.custom_calls)
    assert outcome.validity.baseline_calls == (0, 0)
    assert {mode for mode, _ in outcome.rows} == {"latency", "throughput"}
    summary = json.loads(outcome.summary_path.read_text())
    assert summary["valid"] is True and "Mann-Whitney" in summary["note"]
    assert summary["env"]["custom_kernels"]["version"]  # scripts/bench_env.py ran through the executor
    assert outcome.chart_path is not None and outcome.chart_path.stat().st_size > 1000
    plan = json.loads((results / "S1" / "plan.json").read_text())
    assert [(r["mode"], r["arm"]) for r in plan["runs"]] == [("latency", "baseline"), ("latency", "custom"),
                                                             ("throughput", "baseline"), ("throughput", "custom")]
    assert (results / "S1" / "runs" / "latency-custom-r0.log").read_text().startswith("stand-in vllm")
    # Reloading the saved records gives the same judgment (what --compare reads).
    again = bench_session.summarize_session(results / "S1", bench.load_records(results / "S1"))
    assert again.validity.valid

    # --compare: the custom arm of two saved sessions.
    bench_session.run_session(results, "S2", bench.BenchSpec(mode="latency", repeats=1), run)
    rows, chart, validities = bench_session.compare_sessions(results / "S1", results / "S2", out_dir=tmp_path)
    assert {c.metric for _, c in rows} == {"p50_s", "p90_s", "p99_s", "avg_latency_s"}
    assert all(v.valid for v in validities) and chart is not None
    done = _invoke("--compare", str(results / "S1"), "--compare", str(results / "S2"))
    assert done.returncode == 0, done.stderr
    assert "p50_s" in done.stdout and "S1: valid" in done.stdout and "S2: valid" in done.stdout
    assert (results / "S2" / "compare-S1-vs-S2.png").is_file()


@pytest.mark.vllm_source
@pytest.mark.parametrize("plugin, mp_method, reason, fix", [
    ("missing", "fork", "no custom-kernel call", "never imported"),
    ("ignores_switch", "spawn", "baseline run(s) called the custom kernel", "ignores VLLM_USE_CUSTOM_GEMM=0"),
])
def test_session_invalid_without_custom_kernel_calls(tree, tmp_path, plugin, mp_method, reason, fix):
    results, run = local_executor(tmp_path, tree, plugin, mp_method)
    outcome = bench_session.run_session(results, "S", bench.BenchSpec(mode="latency", repeats=1), run)
    assert not outcome.validity.valid
    assert any(reason in r for r in outcome.validity.reasons)
    assert any(fix in f for f in outcome.validity.fixes)
    summary = json.loads(outcome.summary_path.read_text())
    assert summary["valid"] is False and summary["fixes"]


# --- the task's command line ------------------------------------------------------------------------

def _invoke(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    exe = shutil.which("invoke") or shutil.which("inv")
    assert exe, "invoke is a project dependency"
    return subprocess.run([exe, "bench", *args], cwd=cwd, capture_output=True, text=True, timeout=120)


def test_task_dry_run_prints_the_plan_and_writes_nothing(tmp_path):
    before = set((ROOT / "results").glob("*")) if (ROOT / "results").exists() else set()
    done = _invoke("--custom-gemm", "--dry-run", "--repeats", "2", "--mode", "both", "--extra", "--enforce-eager")
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("vllm bench latency") == 4 and done.stdout.count("vllm bench throughput") == 4
    assert "VLLM_USE_CUSTOM_GEMM=0" in done.stdout and "VLLM_USE_CUSTOM_GEMM=1" in done.stdout
    after = set((ROOT / "results").glob("*")) if (ROOT / "results").exists() else set()
    assert after == before


@pytest.mark.parametrize("args, message", [
    ((), "choose one of"),
    (("--custom-gemm", "--mode", "fast"), "--mode 'fast'"),
    (("--compare", "results/nope"), "exactly two"),
    (("--custom-gemm", "--extra", "--seed 3"), "must not set --seed"),
])
def test_task_bad_input_is_one_line_and_nonzero(args, message):
    done = _invoke(*args)
    assert done.returncode == 1
    assert message in done.stderr and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_task_kernels_delegates_or_says_it_is_missing():
    done = _invoke("--kernels", "--model", "qwen2.5-0.5b", "--dry-run")
    if (ROOT / "custom_kernels" / "custom_kernels" / "bench" / "gemm.py").is_file():
        assert done.returncode == 0, done.stderr
        assert "python3 -m custom_kernels.bench.gemm --model qwen2.5-0.5b --tp 1" in done.stdout
    else:
        assert done.returncode == 1
        assert done.stderr.strip() == ("error: custom_kernels.bench.gemm is not in this checkout: update "
                                       "custom_kernels/ (the kernels package) to get the kernel-level benchmark")


def test_task_decode_proxy_dry_run_prints_the_command():
    done = _invoke("--decode-proxy", "--model", "qwen2.5-0.5b", "--dry-run")
    assert done.returncode == 0, done.stderr
    assert "-m workbench.decode_proxy --model qwen2.5-0.5b" in done.stdout


@pytest.mark.vllm_source
def test_session_stops_when_both_arms_fail_from_the_start(tree, tmp_path):
    results, run = local_executor(tmp_path, tree, "honors")

    def broken(cmd, env):  # e.g. a model id that does not exist: vllm exits 1 for both arms
        return run(["bash", "-c", "echo 'OSError: no such model' >&2; exit 1"] if cmd[0] == "bash" else cmd, env)

    outcome = bench_session.run_session(results, "S", bench.BenchSpec(mode="both", repeats=3), broken)
    assert len(outcome.records) == 2  # not 12
    assert not outcome.validity.valid and "2 run(s) failed" in outcome.validity.reasons[0]
