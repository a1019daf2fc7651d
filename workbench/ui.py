"""Terminal output with rich: tables for status, doctor, gpus; the build failure's log tail; the one JSON
document a task's --json prints instead; progress of long steps that count their work."""

from __future__ import annotations

import codecs
import json
import re
import sys
import time
from collections import deque
from pathlib import Path
from typing import Any, TextIO

from rich.console import Console
from rich.table import Table

# soft_wrap: long lines (reasons, paths) stay whole for grep and logs instead of folding at 80 columns.
console = Console(highlight=False, soft_wrap=True)
err_console = Console(stderr=True, highlight=False, soft_wrap=True)


def print_json(data: Any) -> None:
    """``data`` as one JSON document on stdout, bypassing rich (no wrapping, no markup): --json output is for
    programs, so nothing else goes to stdout beside it (progress and notes go to ``err_console``)."""
    sys.stdout.write(json.dumps(data, indent=1, default=str) + "\n")
    sys.stdout.flush()


def print_build_failure(log_tail: list[str]) -> None:
    if log_tail:
        err_console.rule("build log (last lines)")
        for line in log_tail:
            err_console.print(line, markup=False)
        err_console.rule()


def print_checks(checks) -> None:
    for check in checks:
        console.print(f"{check.icon} [bold]{check.name}[/]: {check.detail}", markup=True)
        if check.fix and check.status != "ok":
            console.print(f"     fix: {check.fix}", markup=False)


def _gib(n: int | None) -> str:
    return "?" if n is None else f"{n / 2**30:.1f}"


def print_gpus(gpus, driver) -> None:
    table = Table(title=f"GPUs (driver {driver.driver_version}, CUDA {driver.cuda_driver_version})")
    for col in ("idx", "name", "cc", "total GiB", "used GiB", "free GiB", "util %", "processes"):
        table.add_column(col)
    for g in gpus:
        procs = ", ".join(f"{p.pid} {p.name} {_gib(p.used_memory_bytes)} GiB" for p in g.processes) or "-"
        util = "?" if g.utilization_gpu_percent is None else str(g.utilization_gpu_percent)
        table.add_row(str(g.index), g.name, g.arch, _gib(g.memory_total_bytes), _gib(g.memory_used_bytes),
                      _gib(g.memory_free_bytes), util, procs)
    console.print(table)


def print_status(settings, state, drift: str) -> None:
    console.print(f"Docker {state.docker_version}; NVIDIA runtime: {'yes' if state.nvidia_runtime else 'no'}")
    if state.dev_image:
        d = state.dev_image
        console.print(f"dev image [bold]{d['ref']}[/] {d['id']} built {d['created']} ({d['size_gb']:.1f} GB) "
                      f"on {d['base']}, user {d['uid']}")
    else:
        console.print(f"dev image [bold]{settings.image_ref}[/]: not built (invoke build)")
    if state.container:
        c = state.container
        note = f" — [yellow]{drift}[/]" if drift else ""
        console.print(f"container [bold]{c['name']}[/]: {c['status']}, image {c['image']}, GPUs {c['gpus']}{note}")
        if c.get("committed_as"):
            console.print(f"  committed as {c['committed_as']}: invoke up keeps this container (it holds that "
                          "image's work); a new one starts from that image", markup=False)
        elif c["reason"]:
            console.print(f"  image chosen because: {c['reason']}", markup=False)
    else:
        console.print(f"container [bold]{state.name}[/]: none (invoke up)")
    if state.committed:
        table = Table(title="committed images")
        columns, rows = state.committed_table()
        for col in columns:
            # A narrow terminal (or a log at 80 columns) folds a cell onto more lines rather than cutting it: the
            # provenance is what the table is for. The commit is never folded, so it can be searched for whole.
            whole = col == "vllm commit"
            table.add_column(col, overflow="fold", no_wrap=whole, min_width=12 if whole else None)
        for row in rows:
            table.add_row(*row)
        console.print(table)
    else:
        console.print("committed images: none (invoke commit)")


# "[k/N] what": ninja's status line (vLLM's CMake build), and the kernels package's tune prints the same.
COUNTED = re.compile(r"^\s*\[(\d+)/(\d+)\]\s*(.*)$")
# Lines worth showing while a bar stands in for the rest: the compiler's and pip's own alarms.
ALARM = re.compile(r"\b(error|warning|FAILED|Traceback)\b", re.IGNORECASE)


class CountedProgress:
    """Output of a long step that counts its work as ``[k/N] what`` lines: one bar with the elapsed time and
    ETA instead of those lines. Every line goes to ``log`` when given (a full build's pip -v output runs to
    thousands of lines); with ``quiet`` the other lines are shown only when they carry an alarm (error,
    warning, FAILED) or come once the count is complete (the install's summary, build time, ccache stats),
    else all of them. Off a terminal (CI, pipes) no bar is drawn: a counted line is printed
    at each tenth of the work. ``tail`` keeps the last lines for a failure message.

        with CountedProgress("compile", log=fh, quiet=True) as progress:
            rc = runtime.run(cmd, out=progress.write, err=progress.write)
    """

    def __init__(self, what: str, log: TextIO | None = None, quiet: bool = False, out: Console | None = None,
                 tail: int = 40) -> None:
        self.what, self.log, self.quiet = what, log, quiet
        self.out = out or console
        self.tail: deque[str] = deque(maxlen=tail)
        self.done = self.total = 0
        self._partial = ""
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._printed_tenth = -1
        self._progress = None
        self._task = None
        self.started = time.monotonic()

    def __enter__(self) -> CountedProgress:
        if self.out.is_terminal:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self._progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                      TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                                      console=self.out, transient=False)
            self._progress.start()
        return self

    def __exit__(self, *exc) -> None:
        if self._partial:
            self._line(self._partial)
            self._partial = ""
        if self._progress is not None:
            self._progress.stop()

    def write(self, chunk: bytes | str) -> None:
        """A Writer for Runtime.run: takes output chunks (bytes, as a runtime delivers them, or text), however
        they split lines or UTF-8 sequences."""
        if isinstance(chunk, bytes):
            chunk = self._decoder.decode(chunk)
        text = self._partial + chunk
        *lines, self._partial = text.split("\n")
        for line in lines:
            self._line(line.rstrip("\r"))

    def _line(self, line: str) -> None:
        if self.log is not None:
            self.log.write(line + "\n")
        if not line.strip():
            return
        self.tail.append(line)
        if m := COUNTED.match(line):
            self._count(int(m.group(1)), int(m.group(2)), m.group(3))
        elif not self.quiet or ALARM.search(line) or (self.total and self.done >= self.total):
            (self._progress.console if self._progress is not None else self.out).print(line, markup=False)

    def _count(self, done: int, total: int, what: str) -> None:
        self.done, self.total = done, max(total, 1)
        label = f"{self.what}: {what[:60]}"
        if self._progress is not None:
            if self._task is None:
                self._task = self._progress.add_task(label, total=self.total)
            self._progress.update(self._task, completed=done, total=self.total, description=label)
            return
        tenth = done * 10 // self.total
        if tenth > self._printed_tenth:
            self._printed_tenth = tenth
            elapsed = time.monotonic() - self.started
            eta = f", ETA {elapsed / done * (self.total - done):.0f} s" if done else ""
            self.out.print(f"{self.what}: [{done}/{self.total}] {elapsed:.0f} s{eta}  {what}", markup=False)


def step_log(results: Path, name: str) -> Path:
    """A fresh log file for a long step under the results folder (``logs/<name>-<UTC>.log``)."""
    folder = results / "logs"
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"{name}-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}.log"
