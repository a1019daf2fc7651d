"""`python -m workbench.trace layers|modules|kernels [flags]`: what `invoke trace` runs where the runtime runs
steps (the dev container, or this host)."""

import sys

from workbench.trace.cli import RUNNERS, main

if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in RUNNERS:
        sys.exit(f"usage: python -m workbench.trace {{{','.join(RUNNERS)}}} [flags]")
    sys.exit(main(sys.argv[1], sys.argv[2:]))
