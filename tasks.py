"""invoke entry point: assembles the workbench's task collections. No logic lives here.

`invoke --list` shows the tasks; `invoke TASK --help` their flags. Settings come from invoke's
config: the defaults in workbench/config.py < invoke.yaml < INVOKE_WORKBENCH_* env vars < flags.
"""

from pathlib import Path

from invoke.exceptions import Exit

from workbench.config import config_problem
from workbench.tasks import collection

ROOT = Path(__file__).resolve().parent
# invoke reads invoke.yaml and INVOKE_WORKBENCH_* after this import and lets their errors through as tracebacks.
if problem := config_problem(ROOT):
    raise Exit(problem, code=1)

ns = collection(ROOT)
