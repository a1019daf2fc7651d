"""invoke entry point: assembles the workbench's task collections. No logic lives here.

`invoke --list` shows the tasks; `invoke TASK --help` their flags. Settings come from invoke's
config: the defaults in workbench/config.py < invoke.yaml < INVOKE_WORKBENCH_* env vars < flags.
"""

from pathlib import Path

from invoke import Collection
from invoke.exceptions import Exit

from workbench.config import DEFAULTS, config_problem
from workbench.tasks import bench, container, host, install, kernels, memory, patch, source, trace

# invoke reads invoke.yaml and INVOKE_WORKBENCH_* after this import and lets their errors through as tracebacks.
if problem := config_problem(Path(__file__).resolve().parent):
    raise Exit(problem, code=1)

ns = Collection()
for module in (container, host, source, install, memory):
    for task in module.TASKS:
        ns.add_task(task)
for module in (patch, bench, kernels, trace):  # namespaces: one verb each (`invoke patch` is patch.apply)
    ns.add_collection(module.ns)
ns.configure({"workbench": {**DEFAULTS, "root": str(Path(__file__).resolve().parent)}})
