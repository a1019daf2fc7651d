"""The profiled command the Nsight plans wrap is accepted by the real `vllm bench latency` parser of 0.24.0, and its
--profiler-config becomes the CUDA profiler that vLLM's latency benchmark brackets the profiled batch with
(EngineArgs.from_cli_args, as vllm/benchmarks/latency.py's main does); 0.13.0's refusal is the planner's one line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.vllm_source import release_deps, vllm_source_tree
from workbench.bench import plan as benchplan
from workbench.errors import WorkbenchError
from workbench.profile import capture
from workbench.runtime import Places

pytestmark = pytest.mark.vllm_source

ROOT = Path(__file__).resolve().parents[2]
PLACES = Places(fork="/w/vllm", kernels="/w/ck", patches="/w/patches", results="/w/results", wheels="/w/wheels",
                guest="/w/guest", state="/opt/workbench", hf_cache="/cache/hf", ccache="/cache/ccache")
PARSE = r"""
import json, sys
sys.path.insert(0, sys.argv[1])
import vllm.platforms
from vllm.platforms.cpu import CpuPlatform
vllm.platforms._current_platform = CpuPlatform()
from vllm.utils.argparse_utils import FlexibleArgumentParser
from vllm.benchmarks import latency
from vllm.engine.arg_utils import EngineArgs

argv = json.loads(sys.stdin.read())
parser = FlexibleArgumentParser(prog="vllm bench latency")
latency.add_cli_args(parser)
ns = parser.parse_args(argv[5:])
config = EngineArgs.from_cli_args(ns).profiler_config
print("RESULT" + json.dumps({"profile": ns.profile, "enforce_eager": ns.enforce_eager, "profiler": config.profiler,
                             "output_len": ns.output_len, "num_iters": ns.num_iters}))
"""


def test_the_profiled_batch_parses_with_vllm_0_24_and_asks_for_the_cuda_profiler():
    spec = capture.profile_spec(benchplan.BenchSpec(model="/w/results/.models/m"), output_len=8)
    work = capture.workload(spec, "custom", PLACES, "/w/results/S/profile/ncu", benchplan.ModelArgs("/w/m", "dummy"),
                            "python", ROOT, eager=True, vllm_version="0.24.0")
    env = {k: v for k, v in os.environ.items() if not k.startswith("VLLM_")}
    deps = release_deps("0.24.0")
    if deps is not None:
        env["PYTHONPATH"] = str(deps)
    done = subprocess.run([sys.executable, "-c", PARSE, str(vllm_source_tree("0.24.0"))], input=json.dumps(work.argv),
                          capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    got = json.loads(next(x for x in done.stdout.splitlines() if x.startswith("RESULT"))[len("RESULT"):])
    assert got == {"profile": True, "enforce_eager": True, "profiler": "cuda", "output_len": 8, "num_iters": 1}


def test_0_13_takes_only_the_torch_profiler_there():
    source = (vllm_source_tree("0.13.0") / "vllm" / "benchmarks" / "latency.py").read_text()
    assert 'if args.profile and not engine_args.profiler_config.profiler == "torch":' in source
    with pytest.raises(WorkbenchError, match=r"vLLM 0\.13\.0's `bench latency --profile` takes only the torch"):
        capture.check_profiler_api("0.13.0")
