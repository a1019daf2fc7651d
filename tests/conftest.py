"""Test tiers (markers): default (no daemon), docker, vllm_source, gpu, vllm_gpu (the real engine).

A tier whose resource is missing is skipped with a printed reason, except under CI for the
docker tier: tests/run.sh provisions a daemon, so a missing one there is a failure, not a skip.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# Docker-tier fixtures (docker_client, dev_tag, project, grantable_ulimits).
pytest_plugins = ["support.docker_fixtures"]


def _docker_reachable() -> str | None:
    try:
        import docker

        client = docker.from_env(timeout=10)
        client.ping()
        client.close()
        return None
    except Exception as err:
        return f"no Docker daemon reachable ({type(err).__name__}); tests/run.sh starts one"


def _cuda_reason() -> str | None:
    try:
        import torch
    except ImportError:
        return "torch is not installed"
    if not torch.cuda.is_available():
        return "no CUDA device on this host (the gpu tier runs on an H100/H200 host)"
    return None


def _vllm_gpu_reason() -> str | None:
    cuda = _cuda_reason()
    if cuda:
        return cuda
    import importlib.util

    # The checkout's vllm/ folder (the fork submodule) is no installed vLLM: it has no __init__.py.
    spec = importlib.util.find_spec("vllm")
    if spec is None or not (spec.origin or "").endswith("__init__.py"):
        return "vLLM is not installed in this Python (the real-engine tier runs where the host runtime has it)"
    return None


# tryfirst: xdist's worker reads the xdist_group marks in its own pytest_collection_modifyitems (it suffixes each
# nodeid with its group); run after it, the marks come too late and every test is a unit of its own, so the
# daemon's tests ran on both workers at once (one rebuilt the dev image while another's `up` checked for drift).
@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    need = {m for item in items for m in ("docker", "podman", "gpu", "vllm_gpu") if item.get_closest_marker(m)}
    reasons = {}
    if "docker" in need:
        reasons["docker"] = _docker_reachable()
        if reasons["docker"] and os.environ.get("CI"):
            raise pytest.UsageError(f"docker tier must run in CI: {reasons['docker']}")
    if "podman" in need:
        reasons["podman"] = "" if shutil.which("podman") else "podman is not installed (tests/run.sh installs it)"
        if reasons["podman"] and os.environ.get("CI"):
            raise pytest.UsageError(f"podman tier must run in CI: {reasons['podman']}")
    if "gpu" in need:
        reasons["gpu"] = _cuda_reason()
    if "vllm_gpu" in need:
        reasons["vllm_gpu"] = _vllm_gpu_reason()
    for item in items:
        for marker, reason in reasons.items():
            if reason and item.get_closest_marker(marker):
                item.add_marker(pytest.mark.skip(reason=f"{marker} tier skipped: {reason}"))
        # tests/run.sh runs pytest-xdist workers with --dist loadgroup. The unit a worker takes is a module (its
        # module-scoped fixtures, e.g. one probe process per vLLM tree, are set up once), and every test of a
        # container daemon is one unit: they share its images, build cache and session fixtures, and run in order.
        daemon = item.get_closest_marker("docker") or item.get_closest_marker("podman")
        item.add_marker(pytest.mark.xdist_group("daemon" if daemon else item.nodeid.split("::")[0]))


def pytest_report_header(config):
    lines = []
    gpu = _cuda_reason()
    lines.append(f"gpu tier: {'skipped - ' + gpu if gpu else 'enabled'}")
    engine = _vllm_gpu_reason()
    lines.append(f"vllm_gpu tier: {'skipped - ' + engine if engine else 'enabled'}")
    lines.append(f"docker CLI: {shutil.which('docker') or 'absent'}; DOCKER_HOST={os.environ.get('DOCKER_HOST', '')}")
    return lines
