"""Results you can query: the session index (results/index.jsonl) that every finished session appends to and
bench.compare picks from, and bench.export's CSV of a session's runs. Real sessions run on CPU through the
host runtime with the stand-in vLLM of tests/support/standin_vllm.py (the fixtures of test_session.py)."""

from __future__ import annotations

import csv
import json
import multiprocessing as mp
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.test_session import host, tree  # noqa: F401  (fixtures: the stand-in runtime and its vLLM tree)
from workbench.bench import export, index, plan, results, session

ROOT = Path(__file__).resolve().parents[2]


def _invoke(*args: str, results_root: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "INVOKE_WORKBENCH_RESULTS": str(results_root)}
    return subprocess.run([sys.executable, "-m", "invoke", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=300, env=env)


# --- real sessions: the index grows, compare picks from it, export writes their records ------------------

@pytest.mark.vllm_source
def test_sessions_are_indexed_exported_and_compared_from_the_index(host, tiny, tmp_path):  # noqa: F811
    root = tmp_path / "results"
    spec = plan.BenchSpec(model=tiny, repeats=1, iters=3, gate=False)
    session.run_session(host, ROOT, "S1", plan.BenchSpec(model=tiny, mode="both", repeats=1, iters=3, gate=False),
                        sample_gpu=False)
    assert len(index.read(root)) == 1
    session.run_session(host, ROOT, "S2", spec, sample_gpu=False)
    lines = index.read(root)
    assert [line["session"] for line in lines] == ["S1", "S2"]  # one line per finished session, in order
    first, second = lines
    env = json.loads((root / "S1" / "env.json").read_text())
    assert first["model"] == tiny and first["modes"] == ["latency", "throughput"] and second["modes"] == ["latency"]
    assert first["driver"] == "cli" and first["valid"] is True and first["aa"] is False
    assert first["gpu"] == "unknown GPU"  # CPU: torch names no device
    assert first["fork_commit"] == env["vllm"]["fork"].get("commit")
    assert first["vllm_version"] == env["vllm"]["dist_version"]
    assert first["route"] == "plugin"  # the fork here carries no applied series patch
    summary = json.loads((root / "S1" / "summary.json").read_text())
    expected = {c["mode"]: c["verdict"] for c in summary["comparisons"]
                if c["metric"] in ("p50_s", "tokens_per_second")}
    assert first["verdicts"] == expected and set(expected) == {"latency", "throughput"}
    assert first["time_utc"].endswith("Z")

    # CSV: one row per record, the same values.
    done = _invoke("bench.export", "S1", results_root=root)
    assert done.returncode == 0, done.stderr
    rows = list(csv.DictReader((root / "S1" / export.CSV_NAME).open()))
    records = results.load_records(root / "S1")
    assert [r["run_id"] for r in rows] == [r.run_id for r in records] and len(rows) == 4
    for row, rec in zip(rows, records, strict=True):
        assert (row["mode"], row["arm"], int(row["repeat"]), int(row["returncode"])) == (
            rec.mode, rec.arm, rec.repeat, rec.returncode)
        assert int(row["custom_calls"]) == rec.counts["total_calls"]
        assert int(row["n_samples"]) == len(rec.samples)
        for key, value in rec.metrics.items():
            assert float(row[key]) == pytest.approx(value)
        assert all(row[k] == "" for k in ("p50_s", "tokens_per_second") if k not in rec.metrics)
    assert {int(r["custom_calls"]) > 0 for r in rows if r["arm"] == "custom"} == {True}
    out = tmp_path / "elsewhere" / "s1.csv"
    assert _invoke("bench.export", str(root / "S1"), "--out", str(out), results_root=root).returncode == 0
    assert out.read_text() == (root / "S1" / export.CSV_NAME).read_text()

    # bench.compare from the index: a folder gone since is skipped with a note.
    index.append(root, {**second, "session": "GONE"})
    picked = _invoke("bench.compare", "latest~1", "latest", "--model", "TINY", results_root=root)
    assert picked.returncode == 0, picked.stderr
    assert "S1: valid" in picked.stdout and "S2: valid" in picked.stdout
    assert "GONE" in picked.stderr and "latest~1 = S1" in picked.stderr and "latest = S2" in picked.stderr
    assert picked.stdout.index("S1: valid") < picked.stdout.index("S2: valid")
    none = _invoke("bench.compare", "latest~1", "latest", "--model", "llama", results_root=root)
    assert none.returncode == 1 and len(none.stderr.strip().splitlines()) == 1
    assert none.stderr.startswith("error: latest~1:") and "0 session(s)" in none.stderr


# --- the index on its own ----------------------------------------------------------------------------

def _summary(valid: bool = True, paired: dict | None = None, patches: dict | None = None) -> dict:
    env = {"gpus": [{"driver_version": "580.1"}], "vllm": {"dist_version": "0.24.0", "fork": {"commit": "abc"}},
           "series": {"patches": patches or {"0001.patch": "not applied"}}}
    return {"gpu": "NVIDIA H200", "aa": False, "valid": valid, "env": env, "paired": paired,
            "spec": {"model": "Qwen/Qwen2.5-0.5B", "mode": "both", "driver": "paired" if paired else "cli"},
            "comparisons": [{"mode": "latency", "metric": "p50_s", "verdict": "custom faster"},
                            {"mode": "latency", "metric": "p90_s", "verdict": "within noise"},
                            {"mode": "throughput", "metric": "tokens_per_second", "verdict": "within noise"}]}


def test_index_line_says_route_driver_and_verdict_per_mode():
    line = index.entry("S", _summary())
    assert (line["route"], line["driver"], line["nvidia_driver"], line["fork_commit"]) == ("plugin", "cli", "580.1",
                                                                                            "abc")
    assert line["verdicts"] == {"latency": "custom faster", "throughput": "within noise"}
    assert index.entry("S", _summary(patches={"0001.patch": "applied"}))["route"] == "patch"
    assert index.entry("S", _summary(valid=False))["verdicts"] == {"latency": "INVALID", "throughput": "INVALID"}
    paired = {"latency": {"verdict": "custom slower"}, "throughput": {"verdict": "within noise"}}
    assert index.entry("S", _summary(paired=paired))["verdicts"] == {"latency": "custom slower",
                                                                     "throughput": "within noise"}


def _append_many(args: tuple[str, int, int]) -> None:
    root, worker, n = args
    for i in range(n):
        # Lines far beyond PIPE_BUF (4 KiB): whole only because each append is one locked write.
        index.append(Path(root), {"session": f"w{worker}-{i}", "pad": "x" * 70_000})


def test_concurrent_appends_keep_every_line_whole(tmp_path):
    with mp.get_context("fork").Pool(4) as pool:
        pool.map(_append_many, [(str(tmp_path), w, 25) for w in range(4)])
    lines = (tmp_path / index.INDEX).read_text().splitlines()
    assert len(lines) == 100
    parsed = [json.loads(line) for line in lines]  # raises on a torn or interleaved line
    assert sorted(p["session"] for p in parsed) == sorted(f"w{w}-{i}" for w in range(4) for i in range(25))
    assert all(len(p["pad"]) == 70_000 for p in parsed)


def test_select_skips_gone_folders_aa_sessions_and_damaged_lines(tmp_path):
    for name in ("A", "B"):
        (tmp_path / name).mkdir()
    for line in ({"session": "A", "model": "Qwen/Qwen2.5-0.5B", "gpu": "NVIDIA H200"},
                 {"session": "AA", "model": "Qwen/Qwen2.5-0.5B", "aa": True},
                 {"session": "B", "model": "meta-llama/Llama-3-8B", "gpu": "NVIDIA H100"},
                 {"session": "C", "model": "Qwen/Qwen2.5-0.5B"}):
        index.append(tmp_path, line)
    with open(tmp_path / index.INDEX, "a") as fh:
        fh.write("{not json\n")
    notes: list[str] = []
    assert [x["session"] for x in index.select(tmp_path, note=notes.append)] == ["A", "B"]
    assert any("C" in n and "gone" in n for n in notes) and any("not a JSON line" in n for n in notes)
    assert [x["session"] for x in index.select(tmp_path, model="qwen")] == ["A"]
    assert [x["session"] for x in index.select(tmp_path, gpu="h100")] == ["B"]
    assert index.resolve(tmp_path, "latest") == "B" and index.resolve(tmp_path, "latest~1") == "A"
    assert index.resolve(tmp_path, "results/A") is None  # a folder, not an index reference


# --- export on its own, and bad input ------------------------------------------------------------------

def test_export_of_saved_records(tmp_path):
    s = tmp_path / "S"
    for i, arm in enumerate(("baseline", "custom")):
        results.save_record(s, results.RunResult(
            run_id=f"latency-{arm}-r0", mode="latency", arm=arm, repeat=0, index=i, returncode=0, started=0.0,
            seconds=2.5, argv=[], env={}, metrics={"p50_s": 0.5 + i, "p90_s": 0.6, "p99_s": 0.7, "avg_latency_s": 0.5},
            counts={"total_calls": 12 * i, "processes": 2, "processes_with_custom_kernels": 1},
            samples=[0.5, 0.6], gpu={"sm_clock_mhz_median": 1980, "power_w_median": 300.5}))
    path, n = export.export_csv(s)
    rows = list(csv.DictReader(path.open()))
    assert (path, n) == (s / "runs.csv", 2)
    assert [r["custom_calls"] for r in rows] == ["0", "12"] and [r["p50_s"] for r in rows] == ["0.5", "1.5"]
    assert rows[1]["gpu_sm_clock_mhz_median"] == "1980" and rows[0]["started_utc"] == "1970-01-01T00:00:00Z"
    assert list(rows[0])[:3] == ["run_id", "mode", "arm"]


@pytest.mark.parametrize("args, message", [
    (("bench.export", "no-such-session"), "error: no session folder no-such-session"),
    (("bench.export", "."), "has no runs/ folder"),
    (("bench.compare", "a", "b", "--model", "x"), "--model / --gpu filter the index"),
    (("bench.compare", "latest~1", "latest"), "holds 0 session(s)"),
])
def test_bad_input_is_one_line(args, message, tmp_path):
    done = _invoke(*args, results_root=tmp_path)
    assert done.returncode == 1 and done.stdout == ""
    assert message in done.stderr and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
