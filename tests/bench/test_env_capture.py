"""One environment capture: workbench/guest/bench_env.py, run by path where the runtime runs steps (the bench
sessions' env.json) and imported as workbench.guest.bench_env by the decode proxy and the trace files; the
kernels package keeps its own capture (it imports nothing of the workbench) under the same names."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from workbench.guest import bench_env

ROOT = Path(__file__).resolve().parents[2]


def test_run_by_path_and_imported_it_records_the_same_fields(tmp_path):
    out = tmp_path / "env.json"
    done = subprocess.run([sys.executable, str(ROOT / "workbench" / "guest" / "bench_env.py"), "--fork",
                           str(tmp_path / "no-fork"), "--patches", str(ROOT / "patches"), "--out", str(out)],
                          capture_output=True, text=True, timeout=300, env={"PATH": "/usr/bin:/bin",
                                                                            "CUSTOM_KERNELS_DISABLE": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    by_path = json.loads(out.read_text())
    assert set(bench_env.basics()) <= set(by_path) and by_path["python"] == bench_env.basics()["python"]
    assert by_path["torch"] == bench_env.torch_info()
    assert by_path["env"] == {"CUSTOM_KERNELS_DISABLE": "1"}  # only what changes the run, never secrets
    assert by_path["vllm"]["fork"]["error"] == "not a git checkout"


@pytest.mark.gpu
def test_tuner_environment_uses_the_capture_names():
    """Where custom_kernels.tune's capture records what bench_env records, names, nesting and values agree."""
    import torch

    from custom_kernels.dispatch import gpu_name
    from custom_kernels.tune import environment

    ours, theirs = environment(), {**bench_env.basics(), "torch": bench_env.torch_info()}
    assert set(theirs) <= set(ours)
    assert {key: ours["torch"][key] for key in theirs["torch"]} == theirs["torch"]
    assert ours["torch"]["device"] == gpu_name(torch.device("cuda", 0))  # the dispatch table's key
