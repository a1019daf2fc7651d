"""The invoke CLI as a user meets it (no daemon needed): task list, help for every flag, config
precedence (defaults < invoke.yaml < INVOKE_WORKBENCH_* < flags), bad input as one line."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def run_invoke(root: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run([sys.executable, "-m", "invoke", "--search-root", str(root), *args],
                          capture_output=True, text=True, env=full_env, cwd=root)


def test_task_list():
    out = run_invoke(ROOT, "--list").stdout
    for name in ("build", "up", "shell", "down", "commit", "status", "doctor", "gpus", "bench.ab", "bench.compare",
                 "bench.proxy", "kernels.tune", "kernels.bench", "trace.layers", "trace.modules", "trace.kernels",
                 "profile.ncu", "profile.nsys", "profile.attribute"):
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
