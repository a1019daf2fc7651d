"""``--budget-min``: the job's clock. The drivers that run one process per run (cli, serve) ask it before each run;
the paired driver gets its deadline (workbench/guest/engine_ab.py judges it per round)."""

from __future__ import annotations

import time
from collections.abc import Callable


class Budget:
    """``--budget-min`` for drivers that run one process per run (cli, serve): no run starts that would end past
    the budget, so a job under a time limit keeps whole runs and its summary. The next run is judged by the last
    one of its arm (an arm's first run compiles its graph, later ones load it), else by the longest so far."""

    def __init__(self, minutes: float, clock: Callable[[], float] = time.monotonic):
        self.limit_s = minutes * 60
        self.clock = clock
        self.started = clock()
        self.last: dict[str, float] = {}
        self.skipped = 0

    def deadline(self, reserve_s: float, wall: Callable[[], float] = time.time) -> float:
        """The budget's end as a wall-clock time (seconds since the epoch), less ``reserve_s`` for what runs after:
        what another process (the paired driver, in the guest) can compare with its own clock."""
        return wall() + self.limit_s - (self.clock() - self.started) - reserve_s

    def done(self, arm: str, seconds: float) -> None:
        self.last[arm] = seconds

    def allows(self, arm: str, left: int) -> bool:
        """Whether the next run (of ``arm``, with ``left`` runs to go counting it) fits; counts the rest as
        skipped when it does not."""
        if self.limit_s <= 0 or not self.last:
            return True
        expected = self.last.get(arm, max(self.last.values()))
        if self.clock() - self.started + expected <= self.limit_s:
            return True
        self.skipped = left
        return False
