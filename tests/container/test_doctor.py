"""`invoke doctor` on a host without a daemon or a driver: each check fails or warns with its fix, and the
CLI exits non-zero after printing every line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from workbench.config import Settings
from workbench.container import doctor

ROOT = Path(__file__).resolve().parents[2]


def run_invoke(root: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run([sys.executable, "-m", "invoke", "--search-root", str(root), *args],
                          capture_output=True, text=True, env=full_env, cwd=root)


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


def test_doctor_json_is_one_document_with_every_check_and_the_same_exit(tmp_path):
    env = {"DOCKER_HOST": "unix:///nonexistent.sock", "INVOKE_WORKBENCH_FORK": str(tmp_path / "x")}
    table = run_invoke(ROOT, "doctor", env=env)
    result = run_invoke(ROOT, "doctor", "--json", env=env)
    assert result.returncode == table.returncode == 1
    data = json.loads(result.stdout)  # stdout holds the document and nothing else
    checks = {c["name"]: c for c in data["checks"]}
    assert data["ok"] is False
    assert [c["name"] for c in data["checks"]] == [line.split(": ")[0].split(" ", 1)[1].strip()
                                                   for line in table.stdout.splitlines() if line[:1] in "✅⚠❌"]
    assert checks["Docker daemon"]["status"] == doctor.FAIL and "unix:///nonexistent.sock" in checks[
        "Docker daemon"]["detail"] and "start Docker" in checks["Docker daemon"]["fix"]
    assert checks["vLLM fork"]["status"] == doctor.FAIL and str(tmp_path / "x") in checks["vLLM fork"]["detail"]
    assert "check(s) failed" in result.stderr and "Traceback" not in result.stderr
