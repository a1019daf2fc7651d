"""bench.ab in a real dev container (docker tier): every step goes through the container runtime
(``workbench.container.devcontainer.DevContainer``); the env reaches the run's child processes; results
land on the host through the results mount; the guest env capture runs inside the container; and a run
whose processes never import custom_kernels is judged INVALID with the fix.

A GPU-less host can't run vLLM, so `python -m vllm.entrypoints.cli.main` in the container is a stdlib
stand-in that starts an "engine" child process (like vLLM V1) and writes the result file vLLM 0.13.0's
own code produced on the host (tests/support/vllm_bench_json.py).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from support import project as project_support
from workbench.bench import plan, session
from workbench.container.devcontainer import DevContainer

pytestmark = [pytest.mark.docker, pytest.mark.vllm_source]

ROOT = Path(__file__).resolve().parents[2]

STANDIN = r'''"""Stand-in `vllm bench` (stdlib): an engine child process, then the prepared vLLM result file."""
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


class StandInContainer(DevContainer):
    """The dev container with the stand-in first on PYTHONPATH; on a real host invoke's user is the
    container's user, here the host is root and the image user TEST_UID, so the session folders the
    host side makes are handed to the container's user before each step."""

    def execute(self, argv, env=None, cwd=None):
        for folder, _, _ in os.walk(self.to_host(self.places.results)):
            os.chown(folder, project_support.TEST_UID, project_support.TEST_GID)
        return super().execute(argv, {**(env or {}), "PYTHONPATH": "/workspace/scripts/test-site"}, cwd)


def test_session_in_the_dev_container_is_invalid_without_custom_kernels(project):
    from tests.support.vllm_bench_json import write_latency_json
    from tests.support.vllm_source import vllm_source_tree

    cli = project.root / "scripts" / "test-site" / "vllm" / "entrypoints" / "cli"
    cli.mkdir(parents=True)
    for pkg in (cli.parent.parent, cli.parent, cli):
        (pkg / "__init__.py").write_text("")
    (cli / "main.py").write_text(STANDIN)
    write_latency_json(vllm_source_tree("0.13.0"), cli / "latency.json", [0.40, 0.41, 0.42, 0.43])
    for folder, dirs, files in os.walk(project.root / "scripts"):
        for name in [folder, *(os.path.join(folder, f) for f in dirs + files)]:
            os.chmod(name, 0o755)

    settings = project.settings
    results = settings.results_path
    runtime = StandInContainer.open(settings)
    spec = plan.BenchSpec(model="Qwen/Qwen2.5-0.5B", mode="latency", repeats=1, iters=4, gate=False)
    try:
        outcome = session.run_session(runtime, project.root, "S", spec, sample_gpu=False)
    finally:
        runtime.close()

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
