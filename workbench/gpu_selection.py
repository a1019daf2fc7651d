"""Parsing of the --gpus value shared by `up`, `gpus` and the install tasks."""

from __future__ import annotations

from typing import Literal

from workbench.errors import WorkbenchError

Selection = Literal["all", "none"] | tuple[int, ...]


def parse_gpu_selection(value: str) -> Selection:
    """'all' | 'none' | '0,1' -> "all" | "none" | (0, 1); anything else is a one-line error."""
    text = str(value).strip().lower()
    if text in ("all", "none"):
        return text  # type: ignore[return-value]
    parts = [p.strip() for p in text.split(",")]
    if not text or not all(p.isdigit() for p in parts):
        raise WorkbenchError(f"--gpus {value!r} is not valid: use all, none, or GPU indices like 0 or 0,1")
    indices = tuple(int(p) for p in parts)
    if len(set(indices)) != len(indices):
        raise WorkbenchError(f"--gpus {value!r} names a GPU twice: use each index once, like 0,1")
    return indices
