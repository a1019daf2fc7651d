"""`invoke bench` orchestration in a real dev container (docker tier): the planned commands go through
the foundation's ``workbench.engine.exec_in_container``; the env reaches the run's child processes;
results land on the host through the results mount; env.json is written inside the container; and a
run whose processes never import custom_kernels is judged INVALID with the fix.

A GPU-less host can't run vLLM, so ``vllm`` in the container is a stdlib stand-in that starts an
"engine" child process (like vLLM V1) and writes the result file vLLM 0.13.0's own code produced on
the host (tests/support/vllm_bench_json.py).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

pytestmark = [pytest.mark.docker, pytest.mark.vllm_source]

project_support = pytest.importorskip("support.project", reason="the foundation's tests/support/project.py "
                                      "(issue 2) is not in this checkout")
engine = pytest.importorskip("workbench.engine", reason="workbench.engine (issue 2) is not in this checkout")

from workbench import bench, bench_session  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
CONTAINER_PATH = "/opt/workbench-venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

STANDIN = r'''#!/usr/bin/env python3
"""Stand-in `vllm bench` (stdlib): an engine child process, then the prepared vLLM result file."""
import multiprocessing as mp, os, shutil, sys

def engine():
    print("engine-core pid", os.getpid(), "VLLM_USE_CUSTOM_GEMM=" + os.environ.get("VLLM_USE_CUSTOM_GEMM", "?"))
    try:
        import custom_kernels  # what vLLM's plugin would do; not installed in this container
    except ImportError as err:
        print("engine-core:", err)

if __name__ == "__main__":
    p = mp.get_context("fork").Process(target=engine)
    p.start(); p.join()
    out = sys.argv[sys.argv.index("--output-json") + 1]
    shutil.copy(os.path.join(os.path.dirname(os.path.abspath(__file__)), "latency.json"), out)
    print("wrote", out)
'''


def test_session_in_the_dev_container_is_invalid_without_custom_kernels(project):
    from tests.support.vllm_bench_json import write_latency_json
    from tests.support.vllm_source import vllm_source_tree

    scripts = project.root / "scripts"
    (scripts / "bench_env.py").write_text((ROOT / "scripts" / "bench_env.py").read_text())
    bin_dir = scripts / "test-bin"
    bin_dir.mkdir()
    (bin_dir / "vllm").write_text(STANDIN)
    (bin_dir / "vllm").chmod(0o755)
    write_latency_json(vllm_source_tree("0.13.0"), bin_dir / "latency.json", [0.40, 0.41, 0.42, 0.43])
    for path in (scripts, bin_dir, *bin_dir.iterdir()):
        os.chmod(path, 0o755)

    settings = project.settings
    from workbench.tasks.bench import _exec_fn

    container_exec = _exec_fn(settings, quiet=True)  # what `invoke bench` uses: the engine, output not streamed

    def exec_fn(cmd: list[str], env: dict[str, str]) -> int:
        # On a real host invoke's user is the container's user; here the host is root and the image user
        # is TEST_UID, so hand the session folders (made by the host side) to the container's user.
        for folder, _, _ in os.walk(results):
            os.chown(folder, project_support.TEST_UID, project_support.TEST_GID)
        env = {**env, "PATH": f"/workspace/scripts/test-bin:{CONTAINER_PATH}"}
        return container_exec(cmd, env)

    results = settings.path(settings.results)
    spec = bench.BenchSpec(model="Qwen/Qwen2.5-0.5B", mode="latency", repeats=1)
    outcome = bench_session.run_session(results, "S", spec, exec_fn)

    env = json.loads((results / "S" / "env.json").read_text())  # written inside the container
    assert env["vllm"]["fork"]["commit"] and env["vllm"]["fork"]["dirty"] is False
    assert "error" in env["custom_kernels"] or "not installed" in str(env["custom_kernels"])
    assert env["env"].get("VLLM_WORKBENCH") == "1"  # the compose file's environment, seen by the script
    for r in outcome.records:
        assert r.returncode == 0 and r.error == "", r.error
        assert r.metrics["p50_s"] == pytest.approx(0.415)
        assert r.counts is not None and r.counts["total_calls"] == 0
        assert any("not installed" in e for e in r.counts["errors"])
        log = (results / "S" / "runs" / f"{r.run_id}.log").read_text()
        # The arm's switch reached the forked engine process inside the container.
        assert f"VLLM_USE_CUSTOM_GEMM={'1' if r.arm == 'custom' else '0'}" in log
    assert not outcome.validity.valid
    assert any("no custom-kernel call" in reason for reason in outcome.validity.reasons)
    assert any("install the kernels package" in fix for fix in outcome.validity.fixes)
    summary = json.loads(outcome.summary_path.read_text())
    assert summary["valid"] is False
    record = results / "S" / "runs" / "latency-custom-r0.json"
    assert record.stat().st_uid == project_support.TEST_UID  # written by the container's user, host-owned
