#!/usr/bin/env python3
"""Trace detailed module call records (call stack, shapes, times), grouped statistics and top-N,
filtered by module type or path.

Runs inside the dev container (vLLM V1, engine core in-process) or anywhere with torch + transformers
(--hf-config path/to/config.json: random weights). `python scripts/trace_modules.py --help` lists the flags.
"""

import sys
from pathlib import Path

# The project root on the host, /workspace in the container (where workbench/ is mounted).
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

try:
    from workbench.trace.cli import main
except ImportError as err:
    sys.exit(f"error: the workbench package is not importable ({err}): run from the project root, or mount "
             "./workbench at /workspace/workbench in the dev container")

if __name__ == "__main__":
    sys.exit(main("modules"))
