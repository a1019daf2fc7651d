"""The custom op's NVTX range: read once at import, off by default, and the op's result is the same either way.

CPU torch has no NVTX (torch._C._nvtx is missing), so here the switch can only be proven to stay harmless;
the range itself is seen by Nsight on the GPU host (docs/profiling.md)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

ROOT = Path(__file__).resolve().parents[2]
PROBE = """
import json, torch, torch.nn.functional as F
import custom_kernels.op as op
x, w, b = torch.randn(3, 5, 16), torch.randn(24, 16), torch.randn(24)
y = op.linear(x, w, b, "probe")
print(json.dumps({"on": op.NVTX_ON, "range": op.NVTX_RANGE, "has_nvtx": hasattr(torch._C, "_nvtx"),
                  "same": bool(torch.equal(y, F.linear(x, w, b))), "shape": list(y.shape)}))
"""


def _probe(switch: str | None) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "CUSTOM_KERNELS_NVTX"}
    if switch is not None:
        env["CUSTOM_KERNELS_NVTX"] = switch
    env["PYTHONPATH"] = str(ROOT / "custom_kernels" / "src")
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_range_is_off_without_the_switch():
    got = _probe(None)
    assert got["on"] is False
    assert got["same"] and got["shape"] == [3, 5, 24]
    assert _probe("0")["on"] is False


def test_switch_turns_the_range_on_only_where_torch_has_nvtx():
    got = _probe("1")
    assert got["on"] is got["has_nvtx"]  # a CPU build: still off, and the op still runs
    assert got["same"] and got["shape"] == [3, 5, 24]
    assert got["range"] == "custom_kernels.linear"
