"""invoke task modules: thin wrappers (flags, help, printing) over the workbench's logic modules.

``collection`` assembles them for tasks.py and puts every task body behind the one error wrapper
(workbench.errors.user_errors: a WorkbenchError or a Docker error is one ``error:`` line, never a traceback).
"""

from __future__ import annotations

from pathlib import Path

from invoke import Collection

from workbench.config import DEFAULTS
from workbench.errors import user_errors


def _wrapped(tasks: Collection) -> None:
    for task in tasks.tasks.values():
        if not getattr(task.body, "_user_errors", False):
            task.body = user_errors(task.body)
            task.body._user_errors = True
    for sub in tasks.collections.values():
        _wrapped(sub)


def collection(root: Path) -> Collection:
    """Every task of the workbench: the plain ones at the top, patch/bench/kernels/trace/profile as namespaces."""
    from workbench.tasks import bench, container, host, install, kernels, memory, patch, profile, source, trace

    ns = Collection()
    for module in (container, host, source, install, memory):
        for task in module.TASKS:
            ns.add_task(task)
    for module in (patch, bench, kernels, trace, profile):  # namespaces: one verb each (`invoke patch` is patch.apply)
        ns.add_collection(module.ns)
    _wrapped(ns)
    ns.configure({"workbench": {**DEFAULTS, "root": str(root)}})
    return ns


__all__ = ["collection"]
