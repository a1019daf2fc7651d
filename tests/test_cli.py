"""The invoke CLI as a user meets it (no daemon needed): task list, help for every flag, config
precedence (defaults < invoke.yaml < INVOKE_WORKBENCH_* < flags), doctor's checks on this host."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from workbench.config import Settings
from workbench.container import doctor

ROOT = Path(__file__).resolve().parent.parent


def run_invoke(root: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run([sys.executable, "-m", "invoke", "--search-root", str(root), *args],
                          capture_output=True, text=True, env=full_env, cwd=root)


def test_task_list():
    out = run_invoke(ROOT, "--list").stdout
    for name in ("build", "up", "shell", "down", "commit", "status", "doctor", "gpus", "bench.ab", "bench.compare",
                 "bench.proxy", "kernels.tune", "kernels.bench", "trace.layers", "trace.modules", "trace.kernels"):
        assert f"  {name} " in out, name
    assert "bench (bench.ab)" in out or "  bench.ab (bench)" in out  # `invoke bench` is the A/B


def test_every_flag_has_help():
    sys.path.insert(0, str(ROOT))
    import tasks

    missing = []
    for name in tasks.ns.task_names:
        task = tasks.ns[name]
        for arg in task.get_arguments():
            if not arg.help:
                missing.append(f"{name} --{arg.name}")
    assert not missing, f"flags without help: {missing}"


@pytest.fixture
def project(tmp_path):
    for item in ("tasks.py", "Dockerfile.dev", "docker-compose.yml"):
        shutil.copy2(ROOT / item, tmp_path / item)
    shutil.copytree(ROOT / "docker", tmp_path / "docker")
    return tmp_path


def test_config_precedence(project):
    default = run_invoke(project, "build", "--dry-run").stdout
    # No fork checkout here: the release the project pins, said so.
    assert "-t vllm-workbench:dev " in default and "BASE_IMAGE=vllm/vllm-openai:v0.13.0" in default
    assert "project's pinned release" in default
    # A fork at another release: its release image, unless configured.
    (project / "vllm" / "vllm").mkdir(parents=True)
    (project / "vllm" / "vllm" / "_version.py").write_text("__version__ = version = '0.33.0'\n")
    follows = run_invoke(project, "build", "--dry-run").stdout
    assert "BASE_IMAGE=vllm/vllm-openai:v0.33.0" in follows and "the fork's release" in follows
    (project / "invoke.yaml").write_text("workbench:\n  image: fromyaml\n  base_image: base:yaml\n")
    assert "-t fromyaml:dev " in run_invoke(project, "build", "--dry-run").stdout
    env = {"INVOKE_WORKBENCH_IMAGE": "fromenv", "INVOKE_WORKBENCH_BASE_IMAGE": "base:env"}
    out = run_invoke(project, "build", "--dry-run", env=env).stdout
    assert "-t fromenv:dev " in out and "BASE_IMAGE=base:env" in out
    out = run_invoke(project, "build", "--dry-run", "--tag", "flag", "--base-image", "base:flag", env=env).stdout
    assert "-t fromenv:flag " in out and "BASE_IMAGE=base:flag" in out
    assert f"USER_UID={os.getuid()}" in out


def test_bad_input_is_one_line_without_traceback(project):
    for args in (["up", "--gpus", "abc"], ["shell", "--gpus", "0,0"], ["build", "--ca-certs", str(project / "nope")]):
        result = run_invoke(project, *args)
        assert result.returncode == 1, args
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in result.stderr, args


def test_doctor_on_a_host_without_daemon_or_driver(tmp_path, monkeypatch):
    """This host has no NVIDIA driver; with no daemon reachable each check says so, with its fix."""
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent.sock")
    settings = Settings.from_mapping(tmp_path, {"hf_cache": str(tmp_path / "hf")})
    checks = {c.name: c for c in doctor.run_checks(settings)}
    assert checks["Docker daemon"].status == doctor.FAIL and "start Docker" in checks["Docker daemon"].fix
    # The fork path is no submodule of any project here: the fix says to clone or point at a checkout.
    assert checks["vLLM fork"].status == doctor.FAIL and "submodule update" not in checks["vLLM fork"].fix
    assert "workbench.fork" in checks["vLLM fork"].fix and "git clone" in checks["vLLM fork"].fix
    # The daemon's whole address, colons and all.
    assert "unix:///nonexistent.sock" in checks["Docker daemon"].detail
    assert checks["Hugging Face cache"].status == doctor.WARN
    try:
        import pynvml

        pynvml.nvmlInit()
        pynvml.nvmlShutdown()
        has_driver = True
    except Exception:
        has_driver = False
    if not has_driver:
        assert checks["GPUs (NVML)"].status == doctor.FAIL and "--gpus none" in checks["GPUs (NVML)"].fix
        cpu_only = {c.name: c for c in doctor.run_checks(settings.with_overrides(gpus="none"))}
        assert cpu_only["GPUs (NVML)"].status == doctor.WARN
    result = run_invoke(tmp_path if (tmp_path / "tasks.py").exists() else ROOT, "doctor",
                        env={"DOCKER_HOST": "unix:///nonexistent.sock", "INVOKE_WORKBENCH_FORK": str(tmp_path / "x")})
    assert result.returncode == 1 and "❌" in result.stdout and "fix:" in result.stdout
    assert "check(s) failed" in result.stderr
