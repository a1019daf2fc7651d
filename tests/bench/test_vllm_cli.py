"""Every command line bench.ab plans is accepted by the real `vllm bench` argument parser of the oldest and
the newest release the workbench supports (0.13.0, 0.33.0), and every flag does there what the plan says.

In one subprocess per release (its sdist first on sys.path, the CPU platform): the guest env capture's
flag probe (workbench/guest/bench_env.py, what a real session runs before planning) lists the options the
release has, the plan is made with them, and the parser is built the way vllm/entrypoints/cli/benchmark
builds it: FlexibleArgumentParser -> `bench` -> `latency` / `throughput` filled by vllm.benchmarks' own
add_cli_args (throughput args also go through its validate_args).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.vllm_source import NEWEST, PINNED, release_deps, vllm_source_tree
from workbench.bench import plan as bench
from workbench.runtime import Places

pytestmark = pytest.mark.vllm_source

ROOT = Path(__file__).resolve().parents[2]
PLACES = Places(fork="/w/vllm", kernels="/w/ck", patches="/w/patches", results="/w/results", wheels="/w/wheels",
                guest="/w/guest", state="/opt/workbench", hf_cache="/cache/hf", ccache="/cache/ccache")

PARSE = r"""
import json, sys
sys.path.insert(0, sys.argv[1])
sys.path.insert(1, sys.argv[2])
import vllm.platforms
from vllm.platforms.cpu import CpuPlatform
vllm.platforms._current_platform = CpuPlatform()
import bench_env
flags = bench_env.bench_flags()
if sys.argv[3] == "flags":
    print("RESULT" + json.dumps(flags))
    sys.exit(0)
from vllm.utils.argparse_utils import FlexibleArgumentParser
from vllm.benchmarks import latency, throughput

root = FlexibleArgumentParser(prog="vllm")
commands = root.add_subparsers(required=False, dest="subparser")
bench_parser = commands.add_parser("bench")
kinds = bench_parser.add_subparsers(required=True, dest="bench_type")
latency.add_cli_args(kinds.add_parser("latency"))
throughput.add_cli_args(kinds.add_parser("throughput"))

out = []
for argv in json.loads(sys.stdin.read()):
    assert argv[1:4] == ["-m", "vllm.entrypoints.cli.main", "bench"], argv
    try:
        ns = root.parse_args(argv[3:])
    except SystemExit as err:
        out.append({"argv": argv, "error": f"exit {err.code}"})
        continue
    if ns.bench_type == "throughput":
        throughput.validate_args(ns)
    keep = ("model", "seed", "tensor_parallel_size", "input_len", "output_len", "batch_size", "num_prompts",
            "dataset_name", "output_json", "enforce_eager", "max_model_len", "bench_type", "enable_prefix_caching",
            "random_input_len", "random_output_len", "num_iters", "num_iters_warmup", "load_format", "tokenizer")
    out.append({"argv": argv, "ns": {k: getattr(ns, k, None) for k in keep}})
print("RESULT" + json.dumps(out))
"""


@pytest.fixture(scope="module", params=[PINNED, NEWEST])
def release(request):
    version = request.param
    tree = vllm_source_tree(version)
    env = {k: v for k, v in os.environ.items() if not k.startswith("VLLM_")}
    deps = release_deps(version)
    if deps is not None:
        env["PYTHONPATH"] = str(deps)

    def run(what: str, argvs: list[list[str]] | None = None):
        done = subprocess.run([sys.executable, "-c", PARSE, str(tree), str(ROOT / "workbench" / "guest"), what],
                              input=json.dumps(argvs or []), capture_output=True, text=True, timeout=600, env=env)
        assert done.returncode == 0, done.stderr[-3000:]
        line = next(x for x in done.stdout.splitlines() if x.startswith("RESULT"))
        return json.loads(line[len("RESULT"):])

    flags = run("flags")
    assert isinstance(flags, dict), flags  # the probe itself works on this release
    return version, frozenset(flags["throughput"]), lambda argvs: run("parse", argvs)


def test_every_planned_argv_parses_and_does_what_the_plan_says(release):
    version, throughput_flags, parse = release
    assert throughput_flags >= bench.throughput_flags_for(version)  # what --dry-run assumes for this release
    spec = bench.BenchSpec(model="/w/results/.models/m", mode="both", repeats=2, tp=2, input_len=64, output_len=32,
                           num_prompts=50, batch_size=4, seed=7, iters=12, warmup_iters=3,
                           extra=bench.parse_extra("--enforce-eager --max-model-len 2048"))
    model = bench.ModelArgs("/w/results/.models/m", "dummy", "/w/results/.models/m/tokenizer")
    runs = bench.plan_runs(spec, "S", PLACES, model, "python", throughput_flags=throughput_flags)
    bad = [*runs[0].argv[:-2], "--no-such-flag", "1", "--output-json", "x.json"]
    results = parse([list(r.argv) for r in runs] + [bad])
    for run, got in zip(runs, results, strict=False):
        assert "error" not in got, got
        ns = got["ns"]
        assert ns["bench_type"] == run.mode and ns["load_format"] == "dummy"
        assert ns["tokenizer"] == "/w/results/.models/m/tokenizer"
        assert ns["model"] == "/w/results/.models/m" and ns["seed"] == 7 and ns["tensor_parallel_size"] == 2
        assert ns["output_json"] == run.output_json
        assert ns["enforce_eager"] is True and ns["max_model_len"] == 2048
        if run.mode == "latency":
            assert (ns["input_len"], ns["output_len"], ns["batch_size"]) == (64, 32, 4)
            assert (ns["num_iters"], ns["num_iters_warmup"]) == (12, 3)
            assert ns["enable_prefix_caching"] is False  # latency.py's own default, which we keep
        else:
            assert ns["num_prompts"] == 50 and ns["dataset_name"] == "random"
            # The lengths land where this release's random dataset reads them.
            if ns["random_input_len"] is not None:
                assert (ns["random_input_len"], ns["random_output_len"]) == (64, 32)
            else:
                assert (ns["input_len"], ns["output_len"]) == (64, 32)
    # The parser is strict: an unknown flag is refused (so the checks above mean something).
    assert results[-1].get("error") == "exit 2"
