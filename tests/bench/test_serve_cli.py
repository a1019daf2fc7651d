"""Serve mode's command lines against the real releases (0.13.0, 0.24.0, 0.33.0), and its parser against the
result document their own `vllm bench serve` code writes.

`vllm bench serve`: every planned argv goes through the release's own vllm.benchmarks.serve.add_cli_args and
each flag lands where the plan means it. `vllm serve`: its parser imports the whole API server (uvicorn,
fastapi, ...), so the planned engine flags go through the release's AsyncEngineArgs parser, and the frontend's
``--host``/``--port`` and positional model are checked in the release's FrontendArgs / make_arg_parser source.
"""

from __future__ import annotations

import ast
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from tests.support.vllm_bench_json import write_serve_json
from tests.support.vllm_source import release_deps, vllm_source_tree
from workbench.bench import plan, serve
from workbench.errors import WorkbenchError
from workbench.runtime import Places

pytestmark = pytest.mark.vllm_source

RELEASES = ("0.13.0", "0.24.0", "0.33.0")
PLACES = Places(fork="/w/vllm", kernels="/w/ck", patches="/w/patches", results="/w/results", wheels="/w/wheels",
                guest="/w/guest", state="/opt/workbench", hf_cache="/cache/hf", ccache="/cache/ccache")
MODEL = plan.ModelArgs("/w/results/.models/m", "dummy", "/w/results/.models/m/tokenizer")

PARSE = r"""
import json, sys
sys.path.insert(0, sys.argv[1])
import vllm.platforms
from vllm.platforms.cpu import CpuPlatform
vllm.platforms._current_platform = CpuPlatform()
from vllm.utils.argparse_utils import FlexibleArgumentParser
from vllm.benchmarks import serve as bench_serve
from vllm.engine.arg_utils import AsyncEngineArgs

docs = json.loads(sys.stdin.read())
client = FlexibleArgumentParser(prog="vllm bench serve")
bench_serve.add_cli_args(client)
engine = AsyncEngineArgs.add_cli_args(FlexibleArgumentParser(prog="vllm serve"))
out = {"bench": [], "engine": []}
for argv in docs["bench"]:
    try:
        ns = vars(client.parse_args(argv))
        out["bench"].append({k: v for k, v in ns.items() if isinstance(v, str | int | float | bool | None)})
    except SystemExit as err:
        out["bench"].append({"error": f"exit {err.code}"})
ns = engine.parse_args(docs["engine"])
out["engine"] = {k: getattr(ns, k) for k in ("model", "seed", "tensor_parallel_size", "load_format", "tokenizer",
                                             "enforce_eager", "max_model_len")}
print("RESULT" + json.dumps(out, default=str))
"""


def _parse(version: str, bench: list[list[str]], engine: list[str]) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VLLM_")}
    deps = release_deps(version)
    if deps is not None:
        env["PYTHONPATH"] = str(deps)
    done = subprocess.run([sys.executable, "-c", PARSE, str(vllm_source_tree(version))],
                          input=json.dumps({"bench": bench, "engine": engine}), capture_output=True, text=True,
                          timeout=600, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(next(x for x in done.stdout.splitlines() if x.startswith("RESULT"))[len("RESULT"):])


def _frontend_fields(tree: Path) -> set[str]:
    """The annotated fields of the release's FrontendArgs (and its bases): the server's own flags."""
    fields: set[str] = set()
    for path in (tree / "vllm" / "entrypoints").rglob("cli_args.py"):
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.ClassDef) and node.name in ("FrontendArgs", "BaseFrontendArgs"):
                fields |= {n.target.id for n in node.body if isinstance(n, ast.AnnAssign)
                           and isinstance(n.target, ast.Name)}
    return fields


@pytest.mark.parametrize("version", RELEASES)
def test_planned_serve_commands_parse_in_each_release(version):
    spec = plan.validate_spec(plan.BenchSpec(model=MODEL.model, mode="serve", repeats=1, input_len=64,
                                             output_len=32, num_prompts=40, seed=7, warmup_iters=3, tp=2,
                                             concurrencies=(1, 8), extra=plan.parse_extra("--enforce-eager "
                                                                                          "--max-model-len 2048")))
    rates = plan.validate_spec(plan.BenchSpec(model=MODEL.model, mode="serve", repeats=1, request_rates=("0.5", "inf")))
    runs = serve.plan_runs(spec, "S", PLACES, MODEL, "python", "abc") + serve.plan_runs(rates, "R", PLACES, MODEL,
                                                                                         "python")
    server = list(runs[0].server_argv)
    assert server[1:5] == ["-m", "vllm.entrypoints.cli.main", "serve", MODEL.model]
    # The frontend's flags and the positional model: the release's own definitions.
    assert {"host", "port"} <= _frontend_fields(vllm_source_tree(version))
    cli_args = "".join(p.read_text() for p in (vllm_source_tree(version) / "vllm" / "entrypoints").rglob("cli_args.py"))
    assert '"model_tag"' in cli_args
    # The route serve_run.py waits on.
    routes = (vllm_source_tree(version) / "vllm" / "entrypoints" / "serve" / "instrumentator" / "health.py").read_text()
    assert '@router.get("/health"' in routes
    i = server.index("--host")
    engine = ["--model", server[4], *server[5:i], *server[i + 4:]]  # drop --host H --port P
    assert server[i:i + 4] == ["--host", serve.HOST, "--port", serve.PORT]
    points = [p for r in runs for p in r.points]
    assert all(p.argv[1:5] == ("-m", "vllm.entrypoints.cli.main", "bench", "serve") for p in points)
    bench = [[str(8123) if a == serve.PORT else a for a in p.argv[5:]] for p in points]
    bad = [*bench[0], "--no-such-flag"]
    got = _parse(version, [*bench, bad], engine)
    assert got["engine"] == {"model": MODEL.model, "seed": 7, "tensor_parallel_size": 2, "load_format": "dummy",
                             "tokenizer": MODEL.tokenizer, "enforce_eager": True, "max_model_len": 2048}
    assert got["bench"][-1] == {"error": "exit 2"}  # the parser is strict: the checks below mean something
    for point, ns in zip(points, got["bench"], strict=False):
        assert "error" not in ns, ns
        assert (ns["model"], ns["tokenizer"], ns["host"], ns["port"]) == (MODEL.model, MODEL.tokenizer, "127.0.0.1",
                                                                           8123)
        assert ns["dataset_name"] == "random" and float(ns["random_range_ratio"]) == 0.0
        assert ns["ignore_eos"] is True and ns["temperature"] == 0.0 and ns["save_result"] is True
        assert ns["result_filename"] == point.result and ns["percentile_metrics"] == "ttft,tpot,itl"
        assert ns["metric_percentiles"] == serve.PERCENTILES
        assert ns["disable_tqdm"] is True and ns["backend"] == "openai"  # streaming /v1/completions
        if point.label.startswith("c="):
            assert (ns["random_input_len"], ns["random_output_len"], ns["num_prompts"]) == (64, 32, 40)
            assert (ns["seed"], ns["num_warmups"]) == (7, 3)
            assert ns["max_concurrency"] == int(point.label[2:]) and float(ns["request_rate"]) == float("inf")
        else:
            assert ns["max_concurrency"] is None and float(ns["request_rate"]) == float(point.label[5:])


def _outputs(n: int, failed: int = 0) -> list[dict]:
    """Request outputs as a client measures them: TTFT, then 15 inter-token gaps that grow with the request."""
    out = []
    for i in range(n):
        itl = [0.010 + 0.001 * i + 0.0001 * k for k in range(15)]
        out.append({"success": i >= failed, "output_tokens": 16 if i >= failed else 0, "prompt_len": 64,
                    "ttft": 0.030 + 0.002 * i, "itl": itl, "latency": 0.030 + 0.002 * i + sum(itl),
                    "start_time": 0.01 * i, "error": "" if i >= failed else "Connection refused",
                    "generated_text": "x" * 16})
    return out


def _args(tmp_path: Path, version: str) -> SimpleNamespace:
    return SimpleNamespace(
        metric_percentiles=serve.PERCENTILES, percentile_metrics="ttft,tpot,itl", max_concurrency=8,
        request_rate=float("inf"), label=None, model="/m", tokenizer="/m/tokenizer", backend="openai", num_prompts=10,
        metadata=None, burstiness=1.0, ramp_up_strategy=None, plot_timeline=False, plot_dataset_stats=False,
        save_detailed=False, save_result=True, append_result=False, result_filename=str(tmp_path / f"{version}.json"),
        result_dir=None)


@pytest.mark.parametrize("version", RELEASES)
def test_parser_reads_the_document_each_release_saves(tmp_path, version):
    outputs = _outputs(10)
    write_serve_json(vllm_source_tree(version), outputs, 2.0, _args(tmp_path, version), "/m/tokenizer")
    saved = json.loads((tmp_path / f"{version}.json").read_text())
    assert saved["max_concurrency"] == 8 and saved["request_rate"] == "inf" and saved["completed"] == 10
    metrics = serve.parse_result(saved)
    tpots = [(o["latency"] - o["ttft"]) / 15 * 1000 for o in outputs]
    assert metrics["ttft_p50_ms"] == pytest.approx(statistics.median(o["ttft"] for o in outputs) * 1000)
    assert metrics["tpot_p50_ms"] == pytest.approx(statistics.median(tpots))
    assert metrics["itl_p50_ms"] == pytest.approx(statistics.median(x for o in outputs for x in o["itl"]) * 1000)
    assert metrics["ttft_p99_ms"] > metrics["ttft_p50_ms"] and metrics["tpot_p99_ms"] > metrics["tpot_p50_ms"]
    assert metrics["itl_p99_ms"] > metrics["itl_p50_ms"]
    assert metrics["output_throughput_tok_s"] == pytest.approx(10 * 16 / 2.0)
    assert metrics["request_throughput_req_s"] == pytest.approx(5.0) and metrics["duration_s"] == 2.0


def test_parser_refuses_failed_requests_and_foreign_documents(tmp_path):
    saved = write_serve_json(vllm_source_tree("0.24.0"), _outputs(5, failed=2), 1.0, _args(tmp_path, "f"), "/m/t")
    with pytest.raises(WorkbenchError, match="2 of 5 requests failed"):
        serve.parse_result(saved)
    with pytest.raises(WorkbenchError, match="lacks"):
        serve.parse_result({"avg_latency": 1.0, "percentiles": {}})
