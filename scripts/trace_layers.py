#!/usr/bin/env python3
"""Trace per-module call counts, the per-step operator summary and the first decoder layer's call order with shapes.

Runs inside the dev container (vLLM V1, engine core in-process) or anywhere with torch + transformers
(--hf-config path/to/config.json: random weights). `python scripts/trace_layers.py --help` lists the flags.
"""

import sys

from _trace_entry import run

if __name__ == "__main__":
    sys.exit(run("layers"))
