"""Validity at tensor parallelism: every rank's worker process of the custom engine must route.

The counter dumps here are real: worker processes joined in a torch.distributed (gloo) group, the counter hook
(workbench/guest/hook) loaded in each through PYTHONPATH as `invoke bench` loads it, custom_kernels routing a
column-parallel shard's GEMM in the ranks told to. What is checked is what the dumps say (which rank, of how many)
and what validity makes of them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from support.model_configs import TINY_QWEN2
from workbench.bench import plan, results, session, verdict

ROOT = Path(__file__).resolve().parents[2]
KERNELS = ROOT / "custom_kernels" / "src"
HOOK = ROOT / "workbench" / "guest" / "hook"

WORKERS = r"""
import os, sys, tempfile, time
import torch, torch.distributed as dist, torch.multiprocessing as mp

def worker(rank, world, init, routed):
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    import custom_kernels  # what the vllm.general_plugins entry point does in every worker
    torch.manual_seed(0)
    layer = torch.nn.Linear(8, 16, bias=False); layer.prefix = "model.layers.0.mlp.gate_up_proj"
    shard = layer.weight.chunk(world)[rank]  # column parallel: this rank's rows of the output
    x = torch.randn(4, 8)
    for _ in range(3):
        y = custom_kernels.unquantized_gemm(layer, x, shard) if rank in routed else torch.nn.functional.linear(x, shard)
        parts = [torch.empty_like(y) for _ in range(world)]
        dist.all_gather(parts, y)
    assert torch.allclose(torch.cat(parts, -1), x @ layer.weight.T, atol=1e-5)
    time.sleep(2.5)  # a worker lives as long as its engine: the hook's 2 s poll sees it in its group
    dist.destroy_process_group()  # as vLLM's workers do on shutdown, before the exit dump

if __name__ == "__main__":
    world, routed = int(sys.argv[1]), {int(r) for r in sys.argv[2].split(",") if r}
    mp.spawn(worker, args=(world, "file://" + tempfile.mktemp(prefix="wb-tp-"), routed), nprocs=world)
"""


def run_workers(tmp_path: Path, run_id: str, world: int, routed: str) -> dict:
    """The merged counter dumps of one 'engine' of ``world`` ranks, ``routed`` (e.g. "0,1") routing."""
    script = tmp_path / "workers.py"  # spawn re-imports __main__ from a file
    script.write_text(WORKERS)
    counts = str(tmp_path / "runs" / f"{run_id}.counts-{{pid}}.json")
    env = {**os.environ, plan.COUNTS_ENV: counts, "PYTHONPATH": os.pathsep.join([str(HOOK), str(KERNELS)])}
    subprocess.run([sys.executable, str(script), str(world), routed], env=env, check=True, cwd=tmp_path,
                   timeout=300)
    return results.read_counts((tmp_path / "runs").glob(f"{run_id}.counts-*.json"))


def _run(arm: str, counts: dict) -> results.RunResult:
    return results.RunResult(run_id=f"latency-{arm}-r0", mode="latency", arm=arm, repeat=0, index=0, returncode=0,
                             started=0.0, seconds=1.0, argv=[], env={}, metrics={"p50_s": 1.0}, counts=counts)


@pytest.fixture(scope="module")
def dumps(tmp_path_factory) -> dict[str, dict]:
    tmp = tmp_path_factory.mktemp("tp-dumps")
    return {"both": run_workers(tmp, "both", 2, "0,1"), "rank0": run_workers(tmp, "rank0", 2, "0"),
            "none": run_workers(tmp, "none", 2, "")}


def test_every_dump_says_which_rank_it_came_from(dumps):
    both = dumps["both"]
    assert both["world_size"] == 2 and both["rank_calls"] == {"0": 3, "1": 3}
    assert both["call_counts"] == {"model.layers.0.mlp.gate_up_proj": 6}
    # a rank that never routed is still named, with no calls: its worker joined the group and dumped; the
    # rank outlives the group, which the workers destroyed before their exit dump
    assert dumps["rank0"]["rank_calls"] == {"0": 3, "1": 0}
    assert dumps["none"]["rank_calls"] == {"0": 0, "1": 0} and dumps["none"]["total_calls"] == 0


def test_a_custom_engine_routing_in_every_rank_is_valid(dumps):
    v = verdict.check_validity([_run("baseline", dumps["none"]), _run("custom", dumps["both"])], tp=2)
    assert v.valid, v.reasons


def test_a_custom_engine_where_only_rank_0_routed_is_invalid(dumps):
    v = verdict.check_validity([_run("baseline", dumps["none"]), _run("custom", dumps["rank0"])], tp=2)
    assert not v.valid
    assert v.reasons == ("1 custom run(s) made no custom-kernel call in every rank: latency-custom-r0 has none "
                         "from rank(s) 1 of 2 (calls per rank: {'0': 3, '1': 0})",)
    assert any("every rank's worker must load the plugin" in f and "--tp 2" in f for f in v.fixes)
    # the dumps name a 2-rank group: the rule holds even where the caller did not say TP=2
    assert not verdict.check_validity([_run("baseline", dumps["none"]), _run("custom", dumps["rank0"])]).valid


def test_a_baseline_that_routed_in_one_rank_is_invalid(dumps):
    v = verdict.check_validity([_run("baseline", dumps["rank0"]), _run("custom", dumps["both"])], tp=2)
    assert not v.valid and "1 baseline run(s) called the custom kernel" in v.reasons


def test_tp_run_whose_dumps_name_no_rank_is_invalid():
    """Dumps from a custom_kernels without rank recording: at TP=2 nothing proves rank 1 routed."""
    counts = {"total_calls": 5, "processes": 3, "processes_with_custom_kernels": 2, "errors": [], "rank_calls": {},
              "world_size": None}
    none = {**counts, "total_calls": 0}
    v = verdict.check_validity([_run("baseline", none), _run("custom", counts)], tp=2)
    assert not v.valid and "none from rank(s) 0, 1 of 2" in v.reasons[0]
    assert "no counter dump says which rank" in v.fixes[0]
    assert verdict.check_validity([_run("baseline", none), _run("custom", counts)], tp=1).valid


# --- a paired session at TP=2 through the stand-in engine ------------------------------------------------



def paired_tp2(tmp_path: Path, monkeypatch, plugin: str, aa: bool = False):
    """A paired latency session at --tp 2 on the host runtime, whose vLLM is the stand-in: each engine runs one
    worker process per rank in a gloo group, lm_head split over them (vocabulary 301: an uneven split, padded)."""
    from support import standin_vllm
    from workbench.config import Settings
    from workbench.runtime import HostRuntime

    site = standin_vllm.site(tmp_path / "site")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(site), str(KERNELS)]))
    monkeypatch.setenv("STANDIN_PLUGIN", plugin)
    monkeypatch.setenv("WORKBENCH_MODEL_DEVICE", "cpu")
    (tmp_path / "tiny").mkdir()
    (tmp_path / "tiny" / "config.json").write_text(json.dumps({**TINY_QWEN2, "vocab_size": 301}))
    settings = Settings.from_mapping(ROOT, {"results": str(tmp_path / "results"), "runtime": "host",
                                            "python": sys.executable})
    spec = plan.BenchSpec(model=str(tmp_path / "tiny" / "config.json"), driver="paired", repeats=1, iters=2,
                          warmup_iters=0, batch_size=2, input_len=4, output_len=2, gate=False, tp=2, aa=aa)
    return session.run_session(HostRuntime(settings), ROOT, f"tp2-{plugin}{'-aa' if aa else ''}", spec,
                               sample_gpu=False)


def test_paired_session_at_tp2_counts_every_ranks_worker(tmp_path, monkeypatch):
    outcome = paired_tp2(tmp_path, monkeypatch, "honors")
    assert outcome.validity.valid, outcome.validity.reasons
    by_arm = {r.arm: r.counts for r in outcome.records}
    assert by_arm["custom"]["world_size"] == 2
    assert all(n > 0 for n in by_arm["custom"]["rank_calls"].values()) and len(by_arm["custom"]["rank_calls"]) == 2
    assert by_arm["baseline"]["total_calls"] == by_arm["control"]["total_calls"] == 0
    assert by_arm["baseline"]["rank_calls"] == {"0": 0, "1": 0}  # its workers joined their group too


def test_an_aa_session_at_tp2_records_the_floor_of_tp2(tmp_path, monkeypatch):
    """The A/A floor at TP=2 is its own key: a TP=1 floor of the same model and GPU is not overwritten, and the
    TP=2 verdicts read this one."""
    outcome = paired_tp2(tmp_path, monkeypatch, "honors", aa=True)
    assert outcome.validity.valid, outcome.validity.reasons
    assert all(r.counts["total_calls"] == 0 for r in outcome.records)  # A/A: no arm routes, in any rank
    floors = json.loads(outcome.floors_path.read_text())["floors"]
    assert list(floors) == [verdict.floor_key(session.UNKNOWN_GPU, "tiny tp2", "latency")]


def test_paired_session_at_tp2_where_only_rank_0_routed_is_invalid(tmp_path, monkeypatch):
    outcome = paired_tp2(tmp_path, monkeypatch, "rank0_only")
    assert not outcome.validity.valid
    assert outcome.validity.reasons[0].startswith("1 custom run(s) made no custom-kernel call in every rank: "
                                                  "latency-custom-r0 has none from rank(s) 1 of 2")
    summary = json.loads(outcome.summary_path.read_text())
    assert summary["valid"] is False and "rank(s) 1 of 2" in summary["invalid_reasons"][0]


@pytest.mark.parametrize(("model", "tp", "message"), [
    ("llama-3-8b", "3", "error: --tp 3 must divide (or be a multiple of) the 8 KV heads of llama-3-8b: use one of "
                        "1, 2, 4, 8, 16"),
    ("qwen2.5-0.5b", "4", "error: --tp 4 does not divide the 14 attention heads of qwen2.5-0.5b: use one of 1, 2"),
])
def test_bench_with_a_tp_the_model_cant_split_stops_in_one_line(model, tp, message):
    done = subprocess.run([sys.executable, "-m", "invoke", "bench", "--model", model, "--tp", tp, "--driver",
                           "paired", "--dry-run"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines() == [message]


def test_the_paired_driver_refuses_more_ranks_than_gpus(tmp_path):
    """On a host whose NVML sees the GPUs, --tp beyond them stops before any engine starts (here: no GPU
    visible at all through CUDA_VISIBLE_DEVICES; without NVML, vLLM itself says so)."""
    pynvml = pytest.importorskip("pynvml")
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as err:
        pytest.skip(f"no NVML on this host ({err}): the GPU count can't be read")
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "0"}
    done = subprocess.run([sys.executable, str(ROOT / "workbench" / "guest" / "engine_ab.py"), "--model", "m",
                           "--mode", "latency", "--arms", "{}", "--tp", "2", "--out", str(tmp_path / "o.json")],
                          env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and done.stderr.startswith("error: --tp 2 needs 2 GPUs, this process sees 1")
