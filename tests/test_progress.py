"""Progress of long steps that count their work as "[k/N]" lines: real ninja builds (vLLM's CMake build runs
ninja), the install task's compile step, and the kernels package's tune lines."""

from __future__ import annotations

import io
import os
import sys
from pathlib import Path

import pytest
from rich.console import Console

from workbench import ui
from workbench.config import Settings
from workbench.errors import WorkbenchError
from workbench.fork import install as inst
from workbench.runtime import HostRuntime

ROOT = Path(__file__).resolve().parents[1]


def _ninja_project(folder: Path, steps: int, fail_at: int | None = None) -> Path:
    """A build.ninja of ``steps`` real commands, each printing a compiler-like warning now and then."""
    folder.mkdir(parents=True, exist_ok=True)
    rules = ["rule make", "  command = sh -c \"$cmd\"", "  description = CXX $out", ""]
    for i in range(steps):
        cmd = f"echo noise line {i}; touch o{i}"
        if i % 7 == 3:
            cmd = f"echo 'csrc/k{i}.cu(12): warning: variable declared but never used' >&2; " + cmd
        if i == fail_at:
            cmd = f"echo 'csrc/k{i}.cu(3): error: identifier undefined' >&2; exit 1"
        rules += [f"build o{i}: make", f"  cmd = {cmd}", ""]
    (folder / "build.ninja").write_text("\n".join(rules))
    return folder


def _ninja() -> list[str]:
    return [sys.executable, "-c", "import ninja, sys; sys.exit(ninja.ninja())"]


def _offscreen() -> tuple[Console, io.StringIO]:
    buf = io.StringIO()
    return Console(file=buf, force_terminal=False, width=200, highlight=False), buf


def test_a_real_ninja_build_becomes_a_count_off_a_terminal(tmp_path):
    project = _ninja_project(tmp_path / "b", 40)
    out, screen = _offscreen()
    log = io.StringIO()
    runtime = HostRuntime(Settings.from_mapping(ROOT, {"runtime": "host", "python": sys.executable}))
    with ui.CountedProgress("compile", log=log, quiet=True, out=out) as progress:
        rc = runtime.run([*_ninja(), "-j", "1"], cwd=str(project), out=progress.write, err=progress.write)
    assert rc == 0 and (progress.done, progress.total) == (40, 40)
    shown = screen.getvalue().splitlines()
    counted = [line for line in shown if line.startswith("compile: [")]
    # one line per tenth of the work (and the first), not one per step; every step is in the log
    assert 10 <= len(counted) <= 11 and counted[-1].startswith("compile: [40/40]") and "ETA 0 s" in counted[-1]
    assert all(f"CXX o{i}" in log.getvalue() and f"noise line {i}" in log.getvalue() for i in range(40))
    # quiet: the noise stays in the log (but what comes once the count is complete), the warnings are shown
    assert [line for line in shown if "noise line" in line] == ["noise line 39"]
    assert sum("warning: variable declared" in line for line in shown) == len([i for i in range(40) if i % 7 == 3])


def test_a_failing_ninja_build_keeps_its_error_in_the_tail(tmp_path):
    project = _ninja_project(tmp_path / "b", 12, fail_at=5)
    out, screen = _offscreen()
    runtime = HostRuntime(Settings.from_mapping(ROOT, {"runtime": "host", "python": sys.executable}))
    with ui.CountedProgress("compile", quiet=True, out=out) as progress:
        rc = runtime.run([*_ninja(), "-j", "1"], cwd=str(project), out=progress.write, err=progress.write)
    assert rc != 0
    assert any("error: identifier undefined" in line for line in progress.tail)
    assert "error: identifier undefined" in screen.getvalue()


def test_on_a_terminal_the_counted_lines_become_one_bar():
    buf = io.StringIO()
    term = Console(file=buf, force_terminal=True, width=120)
    with ui.CountedProgress("tune", out=term) as progress:
        # chunks split anywhere, as a runtime delivers them
        text = "".join(f"[{k}/8]    4096x4096  M={k} cublas 1.0 us\n" for k in range(1, 9)) + "wrote table.json\n"
        for i in range(0, len(text), 13):
            progress.write(text[i:i + 13])
    screen = buf.getvalue()
    assert (progress.done, progress.total) == (8, 8)
    assert "8/8" in screen and "ETA" in screen and "wrote table.json" in screen
    assert "[3/8]" not in screen  # the counted lines themselves are not printed


def test_the_install_tasks_compile_step_shows_a_count_and_logs_everything(tmp_path, capsys):
    from workbench.tasks.install import _run

    project = _ninja_project(tmp_path / "b", 20)
    failing = _ninja_project(tmp_path / "f", 6, fail_at=2)
    runtime = HostRuntime(Settings.from_mapping(ROOT, {"runtime": "host", "python": sys.executable}))
    ok = inst.InstallPlan("full", [inst.Step("compile", [*_ninja(), "-j", "1"], {}, str(project), counted=True)], {})
    _run(runtime, ok, ui.console, False, tmp_path / "results")
    logs = list((tmp_path / "results" / "logs").glob("full-*.log"))
    assert len(logs) == 1 and all(f"CXX o{i}" in logs[0].read_text() for i in range(20))
    bad = inst.InstallPlan("full", [inst.Step("compile", [*_ninja(), "-j", "1"], {}, str(failing), counted=True)], {})
    os.environ.pop("COLUMNS", None)
    with pytest.raises(WorkbenchError) as err:
        _run(runtime, bad, ui.console, False, tmp_path / "results2")
    assert "the last lines are above, all of them in" in str(err.value) and "results2/logs/full-" in str(err.value)
    assert "error: identifier undefined" in capsys.readouterr().err
