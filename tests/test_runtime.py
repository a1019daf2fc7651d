"""The runtime seam: the host runtime runs real child processes (streamed output, exit code, environment,
working folder); unknown runtimes and container-only tasks fail in one line. (The dev container's places:
tests/container/test_places.py.)"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

from workbench.config import Settings
from workbench.errors import WorkbenchError
from workbench.runtime import HostRuntime, container_only, host_python, runtime_name

ROOT = Path(__file__).resolve().parent.parent


def _host(tmp_path: Path, **values) -> HostRuntime:
    return HostRuntime(Settings.from_mapping(ROOT, {"results": str(tmp_path), "python": sys.executable, **values}))


def test_host_runtime_streams_both_pipes_and_keeps_the_exit_code(tmp_path):
    rt = _host(tmp_path)
    code = "import sys; print('out'); print('err', file=sys.stderr); sys.exit(3)"
    execution = rt.execute(["python3", "-c", code])
    chunks = list(execution)
    assert execution.returncode == 3
    assert b"".join(c for s, c in chunks if s == "stdout") == b"out\n"
    assert b"".join(c for s, c in chunks if s == "stderr") == b"err\n"
    out, err = [], []
    assert rt.run(["python3", "-c", "print(1)"], out=out.append, err=err.append) == 0 and b"".join(out) == b"1\n"


def test_host_runtime_passes_env_and_cwd_and_puts_its_interpreter_first(tmp_path):
    rt = _host(tmp_path)
    out: list[bytes] = []
    code = "import os, sys; print(os.environ['WB_X'], os.getcwd(), sys.executable, os.environ['PATH'].split(':')[0])"
    assert rt.run(["python3", "-c", code], env={"WB_X": "42"}, cwd=str(tmp_path), out=out.append) == 0
    x, cwd, exe, first = b"".join(out).decode().split()
    assert (x, cwd, exe) == ("42", str(tmp_path), sys.executable)  # "python3" is workbench.python
    assert first == str(Path(sys.executable).parent)  # its console scripts (vllm, pip) are found first


def test_host_runtime_a_missing_interpreter_is_one_line(tmp_path):
    rt = _host(tmp_path, python=str(tmp_path / "nope" / "bin" / "python"))
    with pytest.raises(WorkbenchError, match=r"not found on this host: set workbench\.python"):
        rt.run(["python3", "-c", "pass"])


def test_host_python_resolution(tmp_path):
    assert host_python(Settings.from_mapping(ROOT, {})) == sys.executable
    assert host_python(Settings.from_mapping(ROOT, {"python": "sh"})) == shutil.which("sh")
    assert host_python(Settings.from_mapping(ROOT, {"python": ".venv/bin/python"})) == str(ROOT / ".venv/bin/python")


def test_host_module_env_puts_the_checkout_last(tmp_path, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", "/first")
    assert _host(tmp_path).module_env() == {"PYTHONPATH": f"/first{os.pathsep}{ROOT}"}


def test_runtime_names_are_checked():
    settings = Settings.from_mapping(ROOT, {})
    assert runtime_name(settings) == "docker"
    assert runtime_name(settings, "HOST") == "host"
    assert runtime_name(Settings.from_mapping(ROOT, {"runtime": "host"})) == "host"
    with pytest.raises(WorkbenchError, match="runtime 'k8s' is not one of docker, host"):
        runtime_name(settings, "k8s")
    with pytest.raises(WorkbenchError, match="invoke up manages the dev container"):
        container_only(settings, "up", "host")
    container_only(settings, "up")  # docker: fine
