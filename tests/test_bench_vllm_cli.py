"""Every command line `invoke bench` plans is accepted by vLLM 0.13.0's real `vllm bench` argument parser.

The parser is built in a subprocess from the release sdist (tree first on sys.path, CPU platform), the
way vllm/entrypoints/cli/benchmark/main.py builds it: FlexibleArgumentParser -> `bench` -> `latency` /
`throughput` subparsers filled by vllm.benchmarks.{latency,throughput}.add_cli_args. (The CLI package's
__init__ imports the whole OpenAI server, so the subcommand classes are not imported themselves; they
only call these add_cli_args.) Throughput args also go through throughput.validate_args.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from workbench import bench

pytestmark = pytest.mark.vllm_source

PARSE = r"""
import json, sys
sys.path.insert(0, sys.argv[1])
import vllm.platforms
from vllm.platforms.cpu import CpuPlatform
vllm.platforms._current_platform = CpuPlatform()
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
    assert argv[0] == "vllm"
    try:
        ns = root.parse_args(argv[1:])
    except SystemExit as err:
        out.append({"argv": argv, "error": f"exit {err.code}"})
        continue
    if ns.bench_type == "throughput":
        throughput.validate_args(ns)
    keep = ("model", "seed", "tensor_parallel_size", "input_len", "output_len", "batch_size", "num_prompts",
            "dataset_name", "output_json", "enforce_eager", "max_model_len", "bench_type", "enable_prefix_caching")
    out.append({"argv": argv, "ns": {k: getattr(ns, k, None) for k in keep}})
print("RESULT" + json.dumps(out))
"""


@pytest.fixture(scope="module")
def parse():
    from tests.support.vllm_source import vllm_source_tree

    tree = vllm_source_tree("0.13.0")

    def run(argvs: list[list[str]]) -> list[dict]:
        done = subprocess.run([sys.executable, "-c", PARSE, str(tree)], input=json.dumps(argvs), capture_output=True,
                              text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
        line = next(x for x in done.stdout.splitlines() if x.startswith("RESULT"))
        return json.loads(line[len("RESULT"):])

    return run


def test_every_planned_argv_parses_with_the_real_parser(parse):
    spec = bench.BenchSpec(model="Qwen/Qwen2.5-0.5B", mode="both", repeats=2, tp=2, input_len=64, output_len=32,
                           num_prompts=50, batch_size=4, seed=7,
                           extra=bench.parse_extra("--enforce-eager --max-model-len 2048"))
    runs = bench.plan_runs(spec, "S")
    bad = [*runs[0].argv[:-2], "--no-such-flag", "1", "--output-json", "x.json"]
    results = parse([list(r.argv) for r in runs] + [bad])
    for run, got in zip(runs, results, strict=False):
        assert "error" not in got, got
        ns = got["ns"]
        assert ns["bench_type"] == run.mode
        assert ns["model"] == "Qwen/Qwen2.5-0.5B" and ns["seed"] == 7 and ns["tensor_parallel_size"] == 2
        assert ns["input_len"] == 64 and ns["output_len"] == 32
        assert ns["output_json"] == run.output_json
        assert ns["enforce_eager"] is True and ns["max_model_len"] == 2048
        if run.mode == "latency":
            assert ns["batch_size"] == 4
            assert ns["enable_prefix_caching"] is False  # latency.py's own default, which we keep
        else:
            assert ns["num_prompts"] == 50 and ns["dataset_name"] == "random"
    # The parser is strict: an unknown flag is refused (so the checks above mean something).
    assert results[-1].get("error") == "exit 2"


def test_default_plan_parses(parse):
    runs = bench.plan_runs(bench.BenchSpec(mode="both", repeats=1), "S")
    assert all("error" not in got for got in parse([list(r.argv) for r in runs]))
