#!/usr/bin/env python3
"""Trace detailed module call records (call stack, shapes, times), grouped statistics and top-N,
filtered by module type or path.

Runs inside the dev container (vLLM V1, engine core in-process) or anywhere with torch + transformers
(--hf-config path/to/config.json: random weights). `python scripts/trace_modules.py --help` lists the flags.
"""

import sys

from _trace_entry import run

if __name__ == "__main__":
    sys.exit(run("modules"))
