"""Shared start of scripts/trace_*.py: find the workbench library, then run one trace mode.

In the dev container workbench is on the venv's path (a .pth, Dockerfile.dev). On the host the
project root is added, and only then: in the container /workspace would put the fork's root folder
/workspace/vllm ahead of the installed vLLM package.
"""

import sys
from pathlib import Path


def run(mode: str) -> int:
    try:
        from workbench.trace.cli import main
    except ImportError:
        sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
        try:
            from workbench.trace.cli import main
        except ImportError as err:
            sys.exit(f"error: the workbench package is not importable ({err}): run from the project root, "
                     "or rebuild the dev image (invoke build) so its venv has the workbench mount on its path")
    return main(mode)
