"""`invoke gpus --json`: the data the table shows (every GPU with its arch, the driver, the arch list), and on a
host without a driver the same one-line error as the table, with nothing on stdout."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from workbench import gpus

ROOT = Path(__file__).resolve().parent.parent


def test_report_carries_what_the_table_shows():
    h200 = gpus.GpuInfo(0, "NVIDIA H200", (9, 0), 150 * 2**30, 2**30, 149 * 2**30, 7, "GPU-a",
                        (gpus.GpuProcess(123, 2**30, "python"),))
    a100 = gpus.GpuInfo(1, "NVIDIA A100", (8, 0), 80 * 2**30, 0, 80 * 2**30, None, "GPU-b")
    data = json.loads(json.dumps(gpus.report([h200, a100], gpus.DriverInfo("580.1", "13.0"))))
    assert (data["driver_version"], data["cuda_driver_version"]) == ("580.1", "13.0")
    assert data["torch_cuda_arch_list"] == "8.0;9.0a"
    first = data["gpus"][0]
    assert (first["name"], first["arch"], first["compute_capability"]) == ("NVIDIA H200", "9.0a", [9, 0])
    assert first["memory_used_bytes"] == 2**30 and first["utilization_gpu_percent"] == 7
    assert first["processes"] == [{"pid": 123, "used_memory_bytes": 2**30, "name": "python"}]
    assert data["gpus"][1]["utilization_gpu_percent"] is None
    assert gpus.report([], gpus.DriverInfo("580.1", "13.0"))["torch_cuda_arch_list"] is None


def test_json_flag_on_this_host():
    done = subprocess.run([sys.executable, "-m", "invoke", "gpus", "--json"], cwd=ROOT, capture_output=True,
                          text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        found = gpus.query_gpus()
    except Exception:
        found = None
    if found is None:  # no driver: the table's error, and stdout stays empty for the program reading it
        assert done.returncode == 1 and done.stdout == ""
        assert len(done.stderr.strip().splitlines()) == 1 and done.stderr.startswith("error: NVML unavailable")
    else:
        assert done.returncode == 0, done.stderr
        assert [g["name"] for g in json.loads(done.stdout)["gpus"]] == [g.name for g in found]
