"""Terminal output with rich: tables for status, doctor, gpus; the build failure's log tail; and the one JSON
document a task's --json prints instead."""

from __future__ import annotations

import json
import sys
from typing import Any

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
            table.add_column(col)
        for row in rows:
            table.add_row(*row)
        console.print(table)
    else:
        console.print("committed images: none (invoke commit)")
