#!/usr/bin/env python3
"""Trace the CUDA kernel table (CPU ops on CPU) with each kernel's category, library and source file in csrc/.

Runs inside the dev container (vLLM V1, engine core in-process) or anywhere with torch + transformers
(--hf-config path/to/config.json: random weights). `python scripts/trace_kernels.py --help` lists the flags.
"""

import sys

from _trace_entry import run

if __name__ == "__main__":
    sys.exit(run("kernels"))
