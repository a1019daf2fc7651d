"""NVML readings while a run runs: SM clock, load, power, memory, every quarter second.

A run that was slower because the GPU clocked down, or because another process shared the GPU, says
so in its record; a run whose GPU sat mostly idle was bound by the CPU (the model is too small for the
GPU to matter, and a GEMM kernel cannot move its latency). Best effort: no NVML, no readings.
"""

from __future__ import annotations

import statistics
import threading
import time
from contextlib import contextmanager
from typing import Any

INTERVAL_S = 0.25


class Sampler:
    def __init__(self, interval_s: float = INTERVAL_S):
        self.interval_s = interval_s
        self.readings: list[tuple[float, int, int, float, int]] = []  # t, sm MHz, util %, W, MiB used
        self.error = ""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._handles: list[Any] = []

    def start(self) -> None:
        try:
            import pynvml

            pynvml.nvmlInit()
            self._handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(pynvml.nvmlDeviceGetCount())]
        except Exception as err:  # no driver, no library: the run is still measured
            self.error = f"NVML unavailable ({type(err).__name__})"
            return
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        import pynvml

        start = time.monotonic()
        while not self._stop.wait(self.interval_s):
            for h in self._handles:
                try:
                    self.readings.append((
                        round(time.monotonic() - start, 2),
                        pynvml.nvmlDeviceGetClockInfo(h, pynvml.NVML_CLOCK_SM),
                        pynvml.nvmlDeviceGetUtilizationRates(h).gpu,
                        pynvml.nvmlDeviceGetPowerUsage(h) / 1000.0,
                        pynvml.nvmlDeviceGetMemoryInfo(h).used // 2**20,
                    ))
                except Exception as err:
                    self.error = f"NVML read failed ({type(err).__name__})"
                    return

    def stop(self) -> dict[str, Any]:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        return summarize(self.readings, self.error)


def summarize(readings: list[tuple[float, int, int, float, int]], error: str = "") -> dict[str, Any]:
    """Medians over the readings taken while the GPU was in use (memory allocated beyond the idle level):
    start-up and shut-down, when nothing runs on the GPU, would drag every median down."""
    if not readings:
        return {"error": error or "no readings"}
    idle_mib = min(r[4] for r in readings)
    busy = [r for r in readings if r[4] > idle_mib + 1024] or readings
    clocks = [r[1] for r in busy]
    utils = [r[2] for r in busy]
    return {
        "readings": len(readings), "busy_readings": len(busy),
        "sm_clock_mhz_median": statistics.median(clocks), "sm_clock_mhz_min": min(clocks),
        "sm_clock_mhz_max": max(clocks), "util_pct_mean": round(statistics.fmean(utils), 1),
        "power_w_median": round(statistics.median(r[3] for r in busy), 1),
        **({"error": error} if error else {}),
    }


@contextmanager
def sampling(enabled: bool = True):
    """``with sampling() as result: ...``; afterwards ``result`` holds the summary."""
    sampler = Sampler()
    result: dict[str, Any] = {}
    if enabled:
        sampler.start()
    try:
        yield result
    finally:
        result.update(sampler.stop() if enabled else {})
