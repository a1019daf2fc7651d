"""bench.ab end to end through the host runtime: the counter hook across real processes, result parsing
against vLLM 0.13.0's own JSON code, validity, A/A floors, model folders made from configs, bench.compare.

vLLM itself needs a GPU; here `python -m vllm.entrypoints.cli.main` is the stand-in of
tests/support/standin_vllm.py: an engine child process (fork or spawn, like vLLM V1) that routes real
matmuls through custom_kernels when the switch and its plugin mode say so, and vLLM's own result code."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest

from support import standin_vllm
from support.model_configs import TINY_QWEN2
from workbench.bench import gate, paired, plan, results, session, timeline, verdict
from workbench.config import Settings
from workbench.errors import WorkbenchError
from workbench.runtime import HostRuntime

ROOT = Path(__file__).resolve().parents[2]
KERNELS = ROOT / "custom_kernels" / "src"  # the package's import root
HOOK = ROOT / "workbench" / "guest" / "hook"


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


def test_hook_dumps_counters_from_forked_and_spawned_children(tmp_path):
    counts = str(tmp_path / "runs" / "r.counts-{pid}.json")
    env = {**os.environ, plan.COUNTS_ENV: counts, "PYTHONPATH": os.pathsep.join([str(HOOK), str(KERNELS)])}
    script = tmp_path / "engine.py"  # spawn re-imports __main__ from a file
    script.write_text(CHILDREN)
    subprocess.run([sys.executable, str(script)], env=env, check=True, cwd=tmp_path, timeout=300)
    merged = results.read_counts((tmp_path / "runs").glob("r.counts-*.json"))
    assert merged["call_counts"] == {"layer3": 3, "layer5": 5}
    assert merged["total_calls"] == 8
    assert merged["processes"] >= 3  # parent + fork child + spawn child (+ spawn's resource tracker)
    assert merged["processes_with_custom_kernels"] == 2
    assert merged["errors"] == []


def test_hook_reports_when_custom_kernels_is_not_installed(tmp_path):
    counts = str(tmp_path / "runs" / "r.counts-{pid}.json")
    env = {**os.environ, plan.COUNTS_ENV: counts, "PYTHONPATH": str(HOOK)}
    subprocess.run([sys.executable, "-c", "print('engine')"], env=env, check=True, cwd=tmp_path)
    merged = results.read_counts((tmp_path / "runs").glob("*.json"))
    assert merged["total_calls"] == 0
    assert any("not installed" in e for e in merged["errors"])


def test_counts_dump_module(tmp_path, monkeypatch):
    import custom_kernels
    from custom_kernels import counts_dump

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
    from support.vllm_source import vllm_source_tree

    return vllm_source_tree("0.13.0")


@pytest.mark.vllm_source
def test_parse_real_latency_json(tree, tmp_path):
    from support.vllm_bench_json import write_latency_json

    lat = [0.5 + 0.01 * i for i in range(30)]
    raw = write_latency_json(tree, tmp_path / "lat.json", lat)
    assert set(raw) == {"avg_latency", "latencies", "percentiles"}
    metrics = results.parse_run_json("latency", raw)
    assert metrics["p50_s"] == pytest.approx(sorted(lat)[14] * 0.5 + sorted(lat)[15] * 0.5)
    assert metrics["p90_s"] > metrics["p50_s"] and metrics["p99_s"] >= metrics["p90_s"]
    assert metrics["avg_latency_s"] == pytest.approx(sum(lat) / len(lat))
    assert results.iteration_samples("latency", raw) == pytest.approx(lat)


@pytest.mark.vllm_source
def test_parse_real_throughput_json(tree, tmp_path):
    from support.vllm_bench_json import write_throughput_json

    raw = write_throughput_json(tree, tmp_path / "thr.json", elapsed_time_s=20.0, num_requests=200,
                                input_len=128, output_len=128)
    metrics = results.parse_run_json("throughput", raw)
    assert metrics == {"tokens_per_second": 200 * 256 / 20.0, "requests_per_second": 10.0, "elapsed_time_s": 20.0}


def test_parse_refuses_foreign_json():
    with pytest.raises(WorkbenchError, match="lacks"):
        results.parse_run_json("latency", {"tokens_per_second": 1.0})


# --- validity, spread, floors ----------------------------------------------------------------------

def _record(arm: str, calls: int | None, imported: int = 1, error: str = "", repeat: int = 0,
            p50: float = 1.0, samples: list[float] | None = None) -> results.RunResult:
    counts = None if calls is None else {"total_calls": calls, "processes": 2, "processes_with_custom_kernels":
                                         imported, "errors": [], "call_counts": {}, "kernel_counts": {}}
    return results.RunResult(run_id=f"latency-{arm}-r{repeat}", mode="latency", arm=arm, repeat=repeat, index=0,
                             returncode=0, started=0.0, seconds=1.0, argv=[], env={},
                             metrics={"p50_s": p50, "p90_s": p50, "p99_s": p50, "avg_latency_s": p50},
                             counts=counts, error=error, samples=samples or [])


def test_validity_rules():
    assert verdict.check_validity([_record("baseline", 0), _record("custom", 12)]).valid
    v = verdict.check_validity([_record("baseline", 0), _record("custom", 0, imported=0)])
    assert not v.valid and "no custom-kernel call" in v.reasons[0] and "never imported" in v.fixes[0]
    assert "invoke patch.apply" in v.fixes[0]  # a task that exists
    v = verdict.check_validity([_record("baseline", 0), _record("custom", 0, imported=1)])
    assert "engine-core" in v.fixes[0] and "compile" in v.fixes[0]
    v = verdict.check_validity([_record("baseline", 7), _record("custom", 7)])
    assert not v.valid and "baseline run(s) called" in v.reasons[0]
    v = verdict.check_validity([_record("baseline", None), _record("custom", None)])
    assert not v.valid and "no counter dump" in v.reasons[0]
    v = verdict.check_validity([_record("baseline", 0), _record("custom", 5, error="vllm bench exited 1")])
    assert not v.valid and "failed" in v.reasons[0]
    # A/A: neither arm may call the custom kernel.
    assert verdict.check_validity([_record("baseline", 0), _record("custom", 0)], aa=True).valid
    assert not verdict.check_validity([_record("baseline", 0), _record("custom", 3)], aa=True).valid


def test_spread_separates_between_run_from_within_run_noise():
    runs = [_record("baseline", 0, repeat=i, p50=p, samples=[p, p * 1.001, p * 0.999])
            for i, p in enumerate((1.0, 1.2, 0.9, 1.1))]
    s = verdict.spread(runs)["latency"]
    assert s["baseline"]["between_runs_cv_pct"] == pytest.approx(12.3, abs=0.1)
    assert s["baseline"]["within_run_cv_pct"] == pytest.approx(0.1, abs=0.01)
    assert s["runs_per_arm_for_2pct"] == verdict.runs_needed(s["pooled_between_runs_cv_pct"]) > 500


def test_runs_needed_for_a_2pct_effect():
    assert verdict.runs_needed(1.0) == 4  # what Mann-Whitney needs at least
    assert verdict.runs_needed(2.0) == 16
    assert verdict.runs_needed(10.0) == 393


def test_floors_are_recorded_by_aa_and_used_by_later_verdicts(tmp_path):
    aa = verdict.compare_arms([_record("baseline", 0, repeat=i, p50=1.0 + 0.01 * i) for i in range(4)]
                              + [_record("custom", 0, repeat=i, p50=1.03 + 0.01 * i) for i in range(4)])
    path = verdict.record_floors(tmp_path, "NVIDIA H200", "Qwen2.5-0.5B", "S-aa", aa)
    floors = verdict.load_floors(tmp_path)
    floor, source = verdict.floor_for(floors, "NVIDIA H200", "Qwen2.5-0.5B", "latency", "p50_s")
    assert path.is_file() and source == "A/A S-aa" and floor >= 2.9  # the A/A's own 3% delta at least
    assert verdict.floor_for(floors, "NVIDIA H100", "Qwen2.5-0.5B", "latency", "p50_s")[1].startswith("default")
    # A 4% delta separated in every run is "faster" against the 2% default, but within this A/A floor of ~5%.
    ab = [_record("baseline", 0, repeat=i, p50=1.0 + 0.001 * i) for i in range(4)] + \
         [_record("custom", 5, repeat=i, p50=0.96 + 0.001 * i) for i in range(4)]
    assert verdict.compare_arms(ab)[0][1].verdict == "custom faster"
    judged = verdict.compare_arms(ab, floors={"latency/p50_s": floor + 1.5})
    assert judged[0][1].verdict == "within noise" and judged[0][1].floor_pct == floor + 1.5


# --- a whole session through the host runtime -------------------------------------------------------





@pytest.fixture
def host(tmp_path, monkeypatch, tree):
    """A host runtime whose vLLM is the stand-in, custom_kernels importable as if pip-installed."""
    site = standin_vllm.site(tmp_path / "site")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(site), str(KERNELS)]))
    monkeypatch.setenv("STANDIN_VLLM_TREE", str(tree))
    monkeypatch.setenv("STANDIN_PLUGIN", "honors")
    monkeypatch.setenv("WORKBENCH_MODEL_DEVICE", "cpu")
    settings = Settings.from_mapping(ROOT, {"results": str(tmp_path / "results"), "runtime": "host",
                                            "python": sys.executable})
    return HostRuntime(settings)


@pytest.mark.vllm_source
def test_session_valid_when_the_switch_routes_gemms(host, tiny, tmp_path):
    spec = plan.BenchSpec(model=tiny, mode="both", repeats=1, iters=4, gate_prompts=3, gate_tokens=6)
    outcome = session.run_session(host, ROOT, "S1", spec, sample_gpu=False)
    assert outcome.validity.valid, outcome.validity.reasons
    assert all(c and c > 0 for c in outcome.validity.custom_calls)
    assert outcome.validity.baseline_calls == (0, 0)
    assert {mode for mode, _ in outcome.rows} == {"latency", "throughput"}
    out = tmp_path / "results" / "S1"
    summary = json.loads(outcome.summary_path.read_text())
    assert summary["valid"] is True and summary["runtime"].startswith("this host")
    assert summary["env"]["custom_kernels"]["version"]  # the guest bench_env.py ran through the runtime
    assert summary["floor_sources"]["latency"].startswith("default")
    assert summary["spread"]["latency"]["baseline"]["within_run_cv_pct"] is not None
    assert outcome.chart_path is not None and outcome.chart_path.stat().st_size > 1000
    # The model folder the runs used: the config plus a tokenizer; the gate's: seeded weights as well.
    assert (tmp_path / "results" / ".models" / "tiny-dummy" / "tokenizer" / "tokenizer.json").is_file()
    assert list((tmp_path / "results" / ".models" / "tiny-random-seed0").glob("*.safetensors"))
    gate = summary["gate"]
    assert gate["valid"] and gate["prompts"] == 3 and gate["identical"] == 3, gate
    assert gate["custom_kernel_calls"]["custom"] == 3 * 6 and gate["custom_kernel_calls"]["baseline"] == 0
    saved = json.loads((out / "plan.json").read_text())
    assert [(r["mode"], r["arm"]) for r in saved["runs"]] == [("latency", "baseline"), ("latency", "custom"),
                                                              ("throughput", "baseline"), ("throughput", "custom")]
    assert (out / "runs" / "latency-custom-r0.log").read_text().startswith("stand-in vllm")
    records = results.load_records(out)
    assert len(records[0].samples) == 4  # --iters reached the run: every timed iteration is kept
    again = session.summarize_session(out, records)  # what bench.compare reads gives the same judgment
    assert again.validity.valid

    session.run_session(host, ROOT, "S2", plan.BenchSpec(model=tiny, repeats=1, iters=4, gate=False),
                        sample_gpu=False)
    rows, chart, validities = session.compare_sessions(out, tmp_path / "results" / "S2", out_dir=tmp_path)
    assert {c.metric for _, c in rows} == {"p50_s", "p90_s", "p99_s", "avg_latency_s"}
    assert all(v.valid for v in validities) and chart is not None
    done = _invoke("bench.compare", str(out), str(tmp_path / "results" / "S2"))
    assert done.returncode == 0, done.stderr
    assert "p50_s" in done.stdout and "S1: valid" in done.stdout and "S2: valid" in done.stdout


@pytest.mark.vllm_source
def test_a_kernel_that_changes_the_output_fails_the_gate(host, tiny, monkeypatch):
    monkeypatch.setenv("STANDIN_GATE_BREAK", "1")
    spec = plan.BenchSpec(model=tiny, repeats=1, iters=3, gate_prompts=4, gate_tokens=8)
    outcome = session.run_session(host, ROOT, "S", spec, sample_gpu=False)
    assert not outcome.validity.valid
    assert any(r.startswith("output gate:") and "outside the other arm's top" in r for r in outcome.validity.reasons)
    assert outcome.validity.custom_calls[0] > 0  # the speed runs were fine: only the gate caught it


@pytest.mark.vllm_source
@pytest.mark.parametrize("plugin, mp_method, reason, fix", [
    ("missing", "fork", "no custom-kernel call", "never imported"),
    ("ignores_switch", "spawn", "baseline run(s) called the custom kernel", "ignores VLLM_USE_CUSTOM_GEMM=0"),
])
def test_session_invalid_without_custom_kernel_calls(host, tiny, monkeypatch, plugin, mp_method, reason, fix):
    monkeypatch.setenv("STANDIN_PLUGIN", plugin)
    monkeypatch.setenv("STANDIN_MP", mp_method)
    spec = plan.BenchSpec(model=tiny, repeats=1, iters=3, gate=False)
    outcome = session.run_session(host, ROOT, "S", spec, sample_gpu=False)
    assert not outcome.validity.valid
    assert any(reason in r for r in outcome.validity.reasons)
    assert any(fix in f for f in outcome.validity.fixes)
    assert json.loads(outcome.summary_path.read_text())["fixes"]


@pytest.mark.vllm_source
def test_aa_session_records_the_floor_the_next_ab_is_judged_by(host, tiny, tmp_path):
    spec = plan.BenchSpec(model=tiny, aa=True, repeats=2, iters=3, gate_prompts=2, gate_tokens=4)
    outcome = session.run_session(host, ROOT, "AA", spec, sample_gpu=False)
    assert outcome.validity.valid, outcome.validity.reasons
    assert outcome.validity.custom_calls == (0, 0)  # both arms ran the baseline
    floors = json.loads((tmp_path / "results" / "floors.json").read_text())["floors"]
    key = verdict.floor_key("unknown GPU", "tiny", "latency")  # CPU: torch names no device
    assert floors[key]["session"] == "AA" and set(floors[key]["metrics"]) >= {"p50_s", "avg_latency_s"}
    ab = session.run_session(host, ROOT, "AB", plan.BenchSpec(model=tiny, repeats=1, iters=3, gate=False),
                             sample_gpu=False)
    summary = json.loads(ab.summary_path.read_text())
    assert summary["floor_sources"]["latency"] == "A/A AA"
    assert {c["floor_pct"] for c in summary["comparisons"]} == set(floors[key]["metrics"].values())


@pytest.mark.vllm_source
def test_session_stops_when_both_arms_fail_from_the_start(host, tiny, monkeypatch):
    monkeypatch.setenv("STANDIN_FAIL", "1")
    outcome = session.run_session(host, ROOT, "S", plan.BenchSpec(model=tiny, mode="both", repeats=3),
                                  sample_gpu=False)
    assert len(outcome.records) == 2  # not 12, and no gate after that
    assert not outcome.validity.valid and "2 run(s) failed" in outcome.validity.reasons[0]


# --- the gate's rule -------------------------------------------------------------------------------

def _gate_file(rows: list[tuple[list[int], list[dict[int, float]]]], vocab: int = 1000) -> dict:
    return {"vocab_size": vocab, "top": 3, "outputs": [
        {"tokens": t, "logprobs": [{str(k): v for k, v in p.items()} for p in lp]} for t, lp in rows]}


def test_gate_rule():
    sharp = [{5: -0.1, 6: -2.5, 7: -3.0}, {8: -0.2, 9: -2.0, 5: -4.0}]
    same = _gate_file([([5, 8], sharp)])
    assert gate.compare_outputs(same, same).valid and gate.compare_outputs(same, same).identical == 1
    # A divergence between near-tied tokens, each in the other's top logprobs: allowed.
    tie = [{5: -0.69, 6: -0.70, 7: -3.0}, {8: -0.2, 9: -2.0, 5: -4.0}]
    tie_b = [{6: -0.69, 5: -0.70, 7: -3.0}, {1: -0.2, 2: -2.0, 3: -4.0}]
    r = gate.compare_outputs(_gate_file([([5, 8], tie)]), _gate_file([([6, 1], tie_b)]))
    assert r.valid and r.diverged_within_top == 1 and r.first_divergence_median == 0
    # A token the other arm did not even consider: a wrong kernel.
    wild = [{42: -0.1, 6: -2.5, 7: -3.0}, {8: -0.2, 9: -2.0, 5: -4.0}]
    r = gate.compare_outputs(same, _gate_file([([42, 8], wild)]))
    assert not r.valid and r.failed == 1 and "outside the other arm's top" in r.reason
    # Flat logits (vLLM's dummy weights): agreement means nothing.
    flat = [{5: -6.90, 6: -6.91, 7: -6.91}] * 2
    r = gate.compare_outputs(_gate_file([([5, 5], flat)]), _gate_file([([5, 5], flat)]))
    assert not r.valid and "flat" in r.reason
    # Same tokens, logprobs far apart.
    off = [{5: -1.5, 6: -2.5, 7: -3.0}, {8: -0.2, 9: -2.0, 5: -4.0}]
    r = gate.compare_outputs(same, _gate_file([([5, 8], off)]))
    assert not r.valid and "logprobs differ" in r.reason


# --- model folders for configs (no hub) ------------------------------------------------------------



def _make_model(folder: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "workbench" / "guest" / "make_model.py"), str(folder), *args],
                          capture_output=True, text=True, timeout=300)


def test_model_folder_gets_a_tokenizer_that_round_trips_every_id(tmp_path):
    from transformers import AutoTokenizer

    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text(json.dumps(TINY_QWEN2))
    done = _make_model(tmp_path / "m")
    assert done.returncode == 0, done.stderr
    tok = AutoTokenizer.from_pretrained(tmp_path / "m" / "tokenizer")
    assert tok.vocab_size == TINY_QWEN2["vocab_size"] and tok.eos_token_id == 299
    ids = [7, 0, 299, 150, 42, 42]
    # vLLM's random dataset decodes sampled ids and encodes the text again: the lengths must hold.
    assert tok.encode(tok.decode(ids), add_special_tokens=False) == ids
    again = _make_model(tmp_path / "m")
    assert "is ready" in again.stdout  # idempotent


def test_random_weights_are_seeded_at_the_models_init_scale(tmp_path):
    from safetensors.torch import load_file

    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.json").write_text(json.dumps(TINY_QWEN2))
        done = _make_model(tmp_path / name, "--weights", "random", "--seed", "5", "--device", "cpu")
        assert done.returncode == 0, done.stderr
    a = load_file(next((tmp_path / "a").glob("*.safetensors")))
    b = load_file(next((tmp_path / "b").glob("*.safetensors")))
    proj = a["model.layers.0.mlp.gate_proj.weight"]
    assert 0.015 < float(proj.std()) < 0.025  # normal(0, initializer_range), not vLLM's dummy ±1e-3
    assert float(a["model.layers.0.input_layernorm.weight"].mean()) == 1.0  # norms at 1: logits are not flat
    assert all((a[k] == b[k]).all() for k in a)  # the seed fixes every weight


# --- the task's command line ------------------------------------------------------------------------

def _invoke(*args: str, cwd: Path = ROOT, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "invoke", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=120, env={**os.environ, **(env or {})})


@pytest.mark.parametrize("runtime, where", [("docker", "dev container"), ("host", "this host")])
def test_dry_run_prints_the_plan_and_writes_nothing(runtime, where):
    before = set((ROOT / "results").glob("*"))
    done = _invoke("bench", "--dry-run", "--repeats", "2", "--mode", "both", "--extra", "--enforce-eager",
                   "--runtime", runtime)
    assert done.returncode == 0, done.stderr
    assert where in done.stdout
    assert done.stdout.count("bench latency") == 4 and done.stdout.count("bench throughput") == 4
    assert "VLLM_USE_CUSTOM_GEMM=0" in done.stdout and "VLLM_USE_CUSTOM_GEMM=1" in done.stdout
    assert set((ROOT / "results").glob("*")) == before
    old = _invoke("bench", "--custom-gemm", "--dry-run", "--runtime", runtime)  # the old spelling still works
    assert old.returncode == 0 and old.stdout.count("bench latency") == 10


def test_dry_run_of_a_config_names_its_model_folder():
    done = _invoke("bench", "--dry-run", "--model", "llama-3-8b", "--runtime", "host", "--repeats", "1")
    assert done.returncode == 0, done.stderr
    assert ".models/llama-3-8b-dummy" in done.stdout and "--load-format dummy" in done.stdout


@pytest.mark.parametrize("args, message", [
    (("bench", "--mode", "fast"), "--mode 'fast'"),
    (("bench", "--extra", "--seed 3"), "must not set --seed"),
    (("bench", "--repeats", "abc"), "--repeats 'abc' is not a whole number"),
    (("bench", "--repeats", "0"), "--repeats '0' must be at least 1"),
    (("bench", "--iters", "x"), "--iters 'x'"),
    (("bench", "--runtime", "podman"), "runtime 'podman' is not one of docker, host"),
    (("bench", "--weights", "fp8"), "--weights 'fp8'"),
    (("bench", "--timeline"), "--timeline stamps the paired driver's requests"),
    (("bench.compare", "results/nope-a", "results/nope-b"), "is not a folder"),
    (("kernels.tune", "--buckets", "abc", "--dry-run"), "--buckets 'abc'"),
    (("kernels.tune", "--tp", "two", "--dry-run"), "--tp 'two'"),
])
def test_bad_input_is_one_line_and_nonzero(args, message):
    done = _invoke(*args)
    assert done.returncode == 1
    assert message in done.stderr and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_runtime_comes_from_invoke_config():
    done = _invoke("bench", "--dry-run", "--repeats", "1", env={"INVOKE_WORKBENCH_RUNTIME": "host"})
    assert done.returncode == 0, done.stderr
    assert "this host" in done.stdout


def test_kernels_bench_dry_run_prints_the_command():
    done = _invoke("kernels.bench", "--model", "qwen2.5-0.5b", "--dry-run", "--runtime", "host")
    assert done.returncode == 0, done.stderr
    assert "-m custom_kernels.bench.gemm --model qwen2.5-0.5b --tp 1" in done.stdout


def test_proxy_dry_run_prints_the_command():
    done = _invoke("bench.proxy", "--model", "qwen2.5-0.5b", "--dry-run")
    assert done.returncode == 0, done.stderr
    assert "-m workbench.bench.proxy --model qwen2.5-0.5b" in done.stdout


# --- the paired driver ------------------------------------------------------------------------------

@pytest.mark.vllm_source
def test_paired_session_interleaves_every_arms_engines(host, tiny, tmp_path, monkeypatch):
    steps = tmp_path / "first-steps.log"
    monkeypatch.setenv("STANDIN_STEP_LOG", str(steps))
    spec = plan.BenchSpec(model=tiny, driver="paired", repeats=2, iters=4, warmup_iters=1, mode="both",
                          num_prompts=3, batch_size=2, input_len=4, output_len=3, gate=False, admission="whole")
    outcome = session.run_session(host, ROOT, "P", spec, sample_gpu=False)
    # Every generate, warm-up and timed, of every arm reached the engine as one batch (the scheduler held back
    # until all of it was added): 2 per latency step, 3 per throughput step, never a part.
    assert sorted(set(steps.read_text().split())) == ["2", "3"]
    assert outcome.validity.valid, outcome.validity.reasons
    # One record per round and arm, each with its own engine's counters: the custom engines routed, the
    # baseline and control engines did not.
    assert sorted(r.run_id for r in outcome.records) == sorted(
        f"{m}-{a}-r{k}" for m in ("latency", "throughput") for a in ("baseline", "control", "custom") for k in (0, 1))
    assert all(c and c > 0 for c in outcome.validity.custom_calls) and set(outcome.validity.baseline_calls) == {0}
    assert all(r.counts["total_calls"] == 0 for r in outcome.records if r.arm == "control")
    assert all(len(r.samples) == 4 for r in outcome.records)
    summary = json.loads(outcome.summary_path.read_text())
    lat = summary["paired"]["latency"]
    assert lat["rounds"] == 2 and len(lat["round_ratios"]) == 2
    assert lat["ci95"][0] <= lat["time_ratio"] <= lat["ci95"][1]
    # The session's own A/A (control vs baseline) is at least part of the floor its verdict used.
    assert lat["control"]["rounds"] == 2 and lat["floor_pct"] >= lat["control"]["aa_floor_pct"]
    data = json.loads((tmp_path / "results" / "P" / "runs" / "paired-latency.json").read_text())
    assert [r["start_order"] for r in data["rounds"]] == [["baseline", "control", "custom"],
                                                          ["custom", "control", "baseline"]]
    assert lat["admission"] == "whole" and "admission_refused" not in lat


@pytest.mark.vllm_source
def test_an_engine_that_cannot_hold_a_batch_back_streams_every_arm_and_says_so(host, tiny, tmp_path, monkeypatch):
    """A release whose engine core has no pause_scheduler: LLM.generate's request-by-request arrival for every
    arm (never whole batches for one arm and streamed ones for another), and the summary says why."""
    steps = tmp_path / "first-steps.log"
    monkeypatch.setenv("STANDIN_STEP_LOG", str(steps))
    monkeypatch.setenv("STANDIN_NO_PAUSE", "1")
    spec = plan.BenchSpec(model=tiny, driver="paired", repeats=1, iters=2, warmup_iters=0, batch_size=3,
                          input_len=4, output_len=2, gate=False, admission="whole")
    outcome = session.run_session(host, ROOT, "S", spec, sample_gpu=False)
    assert outcome.validity.valid, outcome.validity.reasons
    assert steps.read_text().split() == ["1"] * (3 * 3 * 2)  # 3 requests x 3 arms x 2 iterations, one by one
    lat = json.loads(outcome.summary_path.read_text())["paired"]["latency"]
    assert lat["admission"] == "stream"
    assert lat["admission_refused"].startswith("baseline: its engine core cannot pause the scheduler (Call to "
                                               "pause_scheduler method failed")


@pytest.mark.vllm_source
@pytest.mark.parametrize(("admission", "cut"), [("stream", "1+1+1"), ("whole", "3")])
def test_the_timeline_says_which_step_took_which_request(host, tiny, tmp_path, admission, cut):
    """--timeline: every timed request's stamps, and per arm the cuts the engine's steps made. The stand-in
    engine schedules each arriving group in a step of its own: streamed, one request per step; whole, one step."""
    spec = plan.BenchSpec(model=tiny, driver="paired", repeats=1, iters=3, warmup_iters=0, batch_size=3,
                          input_len=4, output_len=2, gate=False, admission=admission, timeline=True)
    outcome = session.run_session(host, ROOT, "T", spec, sample_gpu=False)
    assert outcome.validity.valid, outcome.validity.reasons
    data = json.loads((tmp_path / "results" / "T" / "runs" / "paired-latency.json").read_text())
    stamped = data["rounds"][0]["timeline"]
    assert sorted(stamped) == ["baseline", "control", "custom"]
    for arm, iterations in stamped.items():
        assert len(iterations) == 3 and all(len(rows) == 3 for rows in iterations)
        # queued <= scheduled <= first token <= last in the engine core's monotonic clock; arrival is the front
        # end's wall clock, whose start was read a moment apart from the monotonic one: ordered within 1 ms
        for rows in iterations:
            assert all(0 <= r[1] <= r[2] <= r[3] <= r[4] and 0 <= r[0] <= r[1] + 1e-3 for r in rows), (arm, rows)
    steps = json.loads(outcome.summary_path.read_text())["paired"]["latency"]["timeline"]
    for arm in ("baseline", "control", "custom"):
        assert steps[arm]["cuts"] == {cut: 3} and steps[arm]["iterations"] == 3
        assert steps[arm]["whole_first_step"] == (3 if admission == "whole" else 0)
        assert steps[arm]["median_s_by_cut"][cut] > 0
    line = timeline.describe("custom", steps["custom"])
    assert line.startswith(f"custom: first step took the whole batch in {3 if admission == 'whole' else 0}/3 "
                           f"iterations; cuts {cut} ×3 (")
    done = _invoke("bench", "--runtime", "host", "--driver", "paired", "--timeline", "--dry-run")
    assert done.returncode == 0 and " --timeline " in done.stdout, done.stderr  # the flag reaches the driver


@pytest.mark.vllm_source
def test_paired_session_under_a_time_budget_keeps_its_whole_rounds(host, tiny):
    spec = plan.BenchSpec(model=tiny, driver="paired", repeats=3, iters=2, warmup_iters=0, num_prompts=2,
                          batch_size=2, input_len=4, output_len=2, gate=False, budget_min=1e-4)
    outcome = session.run_session(host, ROOT, "B", spec, sample_gpu=False)
    # The budget ran out after the first round: that round of every arm is kept and judged, no more started.
    assert sorted(r.run_id for r in outcome.records) == [f"latency-{a}-r0" for a in ("baseline", "control", "custom")]
    assert outcome.validity.valid, outcome.validity.reasons
    latency = json.loads(outcome.summary_path.read_text())["paired"]["latency"]
    assert latency["rounds"] == 1 and latency["admission"] == "whole"  # the paired driver's default


def test_a_budget_judges_the_next_run_by_the_last_run_of_its_arm():
    from workbench.bench.budget import Budget

    now = [0.0]
    budget = Budget(1.0, clock=lambda: now[0])
    assert budget.allows("baseline", 4)  # nothing measured yet: the first run always starts
    budget.done("baseline", 40.0)
    now[0] = 40.0
    assert not budget.allows("custom", 3) and budget.skipped == 3  # 40 s gone + 40 s (the only run so far) > 60 s
    now[0] = 0.0
    budget = Budget(2.0, clock=lambda: now[0])
    budget.done("baseline", 40.0)
    budget.done("custom", 70.0)  # the custom arm's first run compiled its graph
    now[0] = 75.0
    assert budget.allows("baseline", 2) and budget.skipped == 0  # 75 + 40 <= 120: baseline's own last run
    assert not budget.allows("custom", 1) and budget.skipped == 1  # 75 + 70 > 120
    assert Budget(0).allows("custom", 1)  # 0: no limit


def test_the_paired_driver_gets_a_deadline_that_leaves_time_for_what_follows_its_rounds():
    from workbench.bench.budget import Budget

    now = [100.0]
    budget = Budget(10.0, clock=lambda: now[0])
    now[0] = 160.0  # the env capture and the model folder took a minute of the job's clock
    assert budget.deadline(30.0, wall=lambda: 5000.0) == 5000.0 + 600 - 60 - 30
    spec = plan.BenchSpec(driver="paired", mode="both", budget_min=10.0)
    started = time.time()
    budget = Budget(10.0)
    first = paired.deadline(spec, budget, modes_left=2)  # latency, then throughput: half of what is left each
    rest = 600 - paired.AFTER_ROUNDS_S - paired.GATE_S
    assert started + rest / 2 - 2 <= first <= time.time() + rest / 2
    no_gate = paired.deadline(replace(spec, gate=False), budget, modes_left=1)
    assert no_gate - first == pytest.approx(rest / 2 + paired.GATE_S, abs=2)
    assert paired.deadline(spec, Budget(0), 1) == 0.0 and paired.deadline(spec, None, 1) == 0.0
    assert paired.deadline(spec, Budget(1e-4), 1) <= time.time()  # past due: round 0 only


@pytest.mark.vllm_source
def test_a_budgeted_cli_session_keeps_its_finished_runs_and_says_what_it_skipped(host, tiny):
    spec = plan.BenchSpec(model=tiny, repeats=2, iters=2, gate=False, budget_min=1e-4)
    outcome = session.run_session(host, ROOT, "B", spec, sample_gpu=False)
    assert [r.run_id for r in outcome.records] == ["latency-baseline-r0"]
    assert json.loads(outcome.summary_path.read_text())["budget"] == {"minutes": 1e-4, "runs_not_started": 3}


@pytest.mark.vllm_source
def test_bench_summary_judges_a_session_cut_short_again(host, tiny, tmp_path):
    results_root = tmp_path / "results"
    session.run_session(host, ROOT, "S", plan.BenchSpec(model=tiny, repeats=2, iters=2, gate=False), sample_gpu=False)
    out = results_root / "S"
    # What a job killed by its time limit leaves: three of four runs, a cut-off summary, not in the index.
    (out / "runs" / "latency-baseline-r1.record.json").unlink()
    (out / "summary.json").write_text('{"valid": tr')  # a summary the kill cut off mid-write
    (results_root / "index.jsonl").unlink()
    env = {"INVOKE_WORKBENCH_RESULTS": str(results_root)}
    done = _invoke("bench.summary", "S", env=env)
    assert done.returncode == 0, done.stderr
    assert "unfinished session: 3 of 4 planned results saved" in done.stdout and "p50_s" in done.stdout
    summary = json.loads((out / "summary.json").read_text())
    assert summary["valid"] and summary["unfinished"] == {"planned_records": 4, "saved_records": 3}
    assert {c["n_baseline"] for c in summary["comparisons"]} == {1}
    assert [line["session"] for line in map(json.loads, (results_root / "index.jsonl").read_text().splitlines())] \
        == ["S"]
    again = _invoke("bench.summary", str(out), env=env)  # judged again: the index keeps one line
    assert again.returncode == 0 and len((results_root / "index.jsonl").read_text().splitlines()) == 1
    (tmp_path / "not-a-session" / "runs").mkdir(parents=True)
    for given, message in (("nosuch", "no such session folder"), (str(tmp_path / "not-a-session"), "no plan.json")):
        bad = _invoke("bench.summary", given, env=env)
        assert bad.returncode == 1 and "Traceback" not in bad.stderr
        assert len(bad.stderr.strip().splitlines()) == 1 and message in bad.stderr, bad.stderr


def test_a_budgeted_session_judges_the_next_round_by_warm_engine_starts():
    from workbench.guest.engine_ab import next_round_s

    # Round 0 on the H200 (Llama-3-8B latency): 196 s of its 215 went to starting engines, two of which compiled
    # their graph; the control loaded the baseline's graph in 18 s. Later engines all start like the control.
    starts = {"baseline": 58.7, "control": 18.2, "custom": 118.8}
    assert next_round_s(215.0, starts) == pytest.approx(215.0 - 195.7 + 3 * 18.2)
    assert next_round_s(80.0, {}) == 80.0


def _affinity_of_a_child(queue) -> None:
    queue.put(sorted(os.sched_getaffinity(0)))


def test_pinned_cpus_are_what_an_engine_started_meanwhile_keeps():
    import multiprocessing

    from workbench.guest.engine_ab import cpu_sets, pinned

    sets = cpu_sets(["baseline", "control", "custom"], set(range(16)))
    assert sets == {"front": [0, 1, 2, 3], "baseline": [4, 5, 6, 7], "control": [8, 9, 10, 11],
                    "custom": [12, 13, 14, 15]}
    assert cpu_sets(["baseline", "control", "custom"], {0, 1, 2}) is None  # fewer CPUs than shares
    # A real child started inside the block (as vLLM starts an engine core) runs on the block's CPUs for life;
    # this process gets its own back.
    before = os.sched_getaffinity(0)
    last = max(before)
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    with pinned([last]):
        child = ctx.Process(target=_affinity_of_a_child, args=(queue,))
        child.start()
    assert queue.get(timeout=60) == [last]
    child.join(timeout=60)
    assert os.sched_getaffinity(0) == before


def test_pin_cpus_with_too_few_cpus_is_one_line(monkeypatch, tmp_path, capsys):
    from workbench.guest import engine_ab

    monkeypatch.setattr(engine_ab.os, "sched_getaffinity", lambda pid: {0, 1})
    arms = json.dumps({"baseline": {}, "control": {}, "custom": {}})
    rc = engine_ab.main(["--model", str(tmp_path), "--mode", "latency", "--arms", arms, "--pin-cpus",
                         "--out", str(tmp_path / "out.json")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1
    assert err[0].startswith("error: --pin-cpus needs 4 CPUs") and "may use 2" in err[0]
    with pytest.raises(WorkbenchError, match="add --driver paired"):
        plan.validate_spec(plan.BenchSpec(pin_cpus=True))
    done = _invoke("bench", "--runtime", "host", "--driver", "paired", "--pin-cpus", "--dry-run")
    assert done.returncode == 0 and " --pin-cpus " in done.stdout, done.stderr  # the flag reaches the driver


def test_a_custom_run_whose_layers_all_fell_back_says_so():
    from workbench.bench import verdict
    from workbench.bench.results import RunResult

    counts = {"total_calls": 0, "processes_with_custom_kernels": 2, "errors": [], "routed_layers": 0,
              "skipped_layers": 96, "skip_reasons": ["no tuned winner for 896x4864 (bfloat16) on NVIDIA H200"]}
    runs = [RunResult(run_id=f"latency-{a}-r0", mode="latency", arm=a, repeat=0, index=i, returncode=0, started=0.0,
                      seconds=1.0, argv=[], env={}, metrics={"p50_s": 1.0},
                      counts={**counts, "skipped_layers": 0} if a == "baseline" else counts)
            for i, a in enumerate(("baseline", "custom"))]
    v = verdict.check_validity(runs)
    assert not v.valid and "1 custom run(s) made no custom-kernel call" in v.reasons
    assert any("routed no layer (no tuned winner for 896x4864" in f and "VLLM_CUSTOM_GEMM_ROUTE=all" in f
               for f in v.fixes)


def test_the_tables_prediction_is_read_beside_the_measured_baseline(tmp_path):
    from workbench.bench.results import RunResult

    (tmp_path / "prediction-latency.json").write_text(json.dumps(
        {"gemm_s_cublas": 0.3, "saved_s": 0.004, "dtype": "bfloat16", "untimed_shapes": []}))
    runs = [RunResult(run_id=f"latency-baseline-r{k}", mode="latency", arm="baseline", repeat=k, index=k, returncode=0,
                      started=0.0, seconds=1.0, argv=[], env={}, metrics={"p50_s": p50})
            for k, p50 in enumerate((0.40, 0.41, 0.39))]
    got = session.prediction_beside(tmp_path, runs, {})["latency"]
    assert got["baseline_s"] == pytest.approx(0.40) and got["gemm_share"] == pytest.approx(0.75)
    assert got["time_ratio"] == pytest.approx(0.99)  # 4 ms saved of 400 ms
    assert "host_s" not in got  # no host cost measured for this GPU: nothing claimed about it

    (tmp_path / "prediction-latency.json").write_text(json.dumps(
        {"gemm_s_cublas": 0.3, "saved_s": 0.004, "dtype": "bfloat16", "untimed_shapes": [], "host_s": 0.002,
         "routed_calls_outside_graphs": 256}))
    got = session.prediction_beside(tmp_path, runs, {})["latency"]
    assert got["time_ratio_with_host"] == pytest.approx(0.995) and got["routed_calls_outside_graphs"] == 256
    assert got["winners_priced_by"] is None  # a prediction from before the table kept bench ratios

    (tmp_path / "prediction-latency.json").write_text(json.dumps(
        {"gemm_s_cublas": 0.3, "saved_s": 0.004, "dtype": "bfloat16", "untimed_shapes": [],
         "winners_priced_by": {"bench": 1, "tune": 2}}))
    got = session.prediction_beside(tmp_path, runs, {})["latency"]
    from workbench.bench.report import summary_lines

    line = next(t for _, t in summary_lines({"prediction": {"latency": got}}) if "predicts" in t)
    assert "0.9900" in line and "2 of its 3 winners priced at the tune's timing, which runs high" in line
    got["winners_priced_by"] = {"bench": 3, "tune": 0}
    line = next(t for _, t in summary_lines({"prediction": {"latency": got}}) if "predicts" in t)
    assert "tune's timing" not in line  # every winner priced from a bench: nothing to warn about


def test_the_ops_host_cost_is_read_from_the_h200s_measurement():
    from workbench.profile.peaks import op_host_us

    root = Path(__file__).resolve().parents[2]
    measured = json.loads((root / "custom_kernels/bench/results/nvidia-h200/op_host.json").read_text())
    over = measured["op_over_F.linear_us"]
    assert 0 < over["op (direct)"] < over["op (custom_op)"]  # the shipped registration is the cheaper one
    assert op_host_us(root, "NVIDIA H200") == pytest.approx(over["op (direct)"])
    assert op_host_us(root, "NVIDIA H200", "custom_op") == pytest.approx(over["op (custom_op)"])
    assert op_host_us(root, "a GPU nobody measured") is None


def _paired_records(rounds: list[dict[str, list[float]]]):
    from workbench.bench.results import RunResult

    return [RunResult(run_id=f"latency-{arm}-r{k}", mode="latency", arm=arm, repeat=k, index=0, returncode=0,
                      started=0.0, seconds=0.0, argv=[], env={}, metrics={"p50_s": 1.0}, samples=times)
            for k, arms in enumerate(rounds) for arm, times in arms.items()]


def test_paired_verdict_needs_an_effect_beyond_the_sessions_own_control():
    from workbench.bench import paired

    base = [1.0, 1.01, 0.99, 1.0, 1.0]
    faster = [0.97, 0.98, 0.96, 0.97, 0.97]  # 3% less time in every round, a tight interval
    quiet = {"baseline": base, "control": base, "custom": faster}
    assert paired.analyse(_paired_records([quiet] * 4), {})["latency"]["verdict"] == "custom faster"
    # The same custom arm, but the baseline engine against itself differs by 5% in the same rounds.
    noisy = {"baseline": base, "control": [1.05, 1.06, 1.04, 1.05, 1.05], "custom": faster}
    row = paired.analyse(_paired_records([noisy] * 4), {})["latency"]
    assert row["control"]["aa_floor_pct"] >= 5.0 and row["floor_pct"] >= 5.0
    assert row["verdict"] == "within noise"


def test_paired_statistic_counts_an_engine_bias_as_noise():
    from workbench.bench import paired

    steady = [([1.0, 1.01, 0.99, 1.0], [0.9, 0.91, 0.89, 0.9])] * 4  # custom 10% faster in every round
    ratio, lo, hi = paired.ratio_interval(steady)
    assert ratio == pytest.approx(0.9, abs=1e-3) and hi < 1.0
    # The same 10% in one round and -10% in the next (an engine that happened to be slow): no verdict.
    flipping = [([1.0, 1.01, 0.99], [0.9, 0.91, 0.89]), ([1.0, 1.01, 0.99], [1.1, 1.11, 1.09])] * 2
    _, lo, hi = paired.ratio_interval(flipping)
    assert lo < 1.0 < hi


def test_default_repeats_come_from_the_measured_spread_of_this_gpu_model_and_mode(tmp_path):
    # The shipped H200 floors: Llama-3-8B latency varied by 0.2% between engines, Qwen2.5-0.5B by 9.9%.
    llama, why = verdict.with_default_repeats(plan.BenchSpec(model="llama-3-8b", driver="paired"), tmp_path,
                                              "NVIDIA H200")
    assert llama.repeats == 4 and "needs ~4 per arm" in why and "20261130-161251" in why
    qwen, why = verdict.with_default_repeats(plan.BenchSpec(model="qwen2.5-0.5b", mode="both"), tmp_path,
                                             "NVIDIA H200")
    # throughput (13.4%) is the wider of the two modes: 700 runs for 2%, so the default stops at the cap and says
    # which effect its runs resolve instead
    assert qwen.repeats == verdict.MAX_DEFAULT_REPEATS
    assert "throughput" in why and "needs ~700 per arm" in why and "12 resolve ~15%" in why
    tp2, _ = verdict.with_default_repeats(plan.BenchSpec(model="llama-3-8b", tp=2), tmp_path, "NVIDIA H200")
    assert tp2.repeats == verdict.MAX_DEFAULT_REPEATS  # TP=2 has a spread of its own (3.1%: ~37 runs)
    # Your own A/A sessions override the shipped entry; another GPU, a serve session or no GPU keep the default.
    (tmp_path / verdict.FLOORS_FILE).write_text(json.dumps({"floors": {"NVIDIA H200 | qwen2.5-0.5b | latency": {
        "session": "mine", "metrics": {}, "between_runs_cv_pct": 1.0}}}))
    mine, why = verdict.with_default_repeats(plan.BenchSpec(model="qwen2.5-0.5b"), tmp_path, "NVIDIA H200")
    assert mine.repeats == 4 and "(A/A mine)" in why
    assert verdict.with_default_repeats(plan.BenchSpec(model="qwen2.5-0.5b"), tmp_path, "NVIDIA H100 80GB HBM3")[0] \
        .repeats == plan.BenchSpec.repeats
    for spec, gpu in ((plan.BenchSpec(mode="serve"), "NVIDIA H200"), (plan.BenchSpec(), None)):
        assert verdict.with_default_repeats(spec, tmp_path, gpu) == (spec, "")


def test_an_aa_session_records_the_spread_later_defaults_come_from(tmp_path):
    rows = [("latency", verdict.compare("p50_s", [1.0, 1.01, 0.99, 1.0], [1.0, 1.0, 1.02, 0.98]))]
    path = verdict.record_floors(tmp_path, "GPU", "m", "S", rows,
                                 spreads={"latency": {"pooled_between_runs_cv_pct": 1.50049}})
    entry = json.loads(path.read_text())["floors"]["GPU | m | latency"]
    assert entry["between_runs_cv_pct"] == 1.5 and entry["session"] == "S" and "p50_s" in entry["metrics"]
    assert verdict.default_repeats(verdict.load_floors(tmp_path), "GPU", "m", ["latency"], 5)[0] == 9
