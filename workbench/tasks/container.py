"""Tasks (filled in by the foundation issue)."""

TASKS: list = []
