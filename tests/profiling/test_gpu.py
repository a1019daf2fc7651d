"""gpu tier: the pieces that need CUDA, on the GPU host. The op's NVTX range is really pushed on a CUDA build (the
switch on, the result unchanged), and the launch attribution on a real CUDA torch.profiler trace: GEMMs the op
launches count as the op's, vLLM-side ones as cuBLAS's own. Needs only torch (no vLLM, no Nsight)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.gpu

torch = pytest.importorskip("torch")

from workbench.profile import attribution  # noqa: E402
from workbench.trace.kernels import profile_to_chrome_trace  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
PROBE = """
import json, torch, torch.nn.functional as F
import custom_kernels.op as op
x, w = torch.randn(8, 256, device="cuda"), torch.randn(512, 256, device="cuda")
y = op.linear(x, w, None, "probe")
torch.cuda.synchronize()
print(json.dumps({"on": op.NVTX_ON, "same": bool(torch.equal(y, F.linear(x, w)))}))
"""


def test_the_switch_pushes_the_range_on_a_cuda_build():
    env = {**os.environ, "CUSTOM_KERNELS_NVTX": "1", "PYTHONPATH": str(ROOT / "custom_kernels" / "src")}
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == {"on": True, "same": True}


def test_gpu_gemms_are_attributed_to_their_launcher(tmp_path):
    from tests.profiling.test_attribution import Block  # the same small decoder MLP as the CPU test

    x = torch.randn(4, 16, 64, device="cuda")  # fp32: the op's table never routes fp32, so it launches cuBLAS
    profiles = {}
    for arm in attribution.ARMS:
        model = torch.nn.Sequential(*[Block(arm == "custom") for _ in range(3)]).cuda().eval()
        with torch.no_grad():
            model(x)
            trace = profile_to_chrome_trace(lambda m=model: m(x), tmp_path / arm / "w.pt.trace.json", cuda=True)
        profiles[arm] = attribution.arm_profile(arm, [trace], None, "cuda")
    base, custom = profiles["baseline"].gpu_time_us, profiles["custom"].gpu_time_us
    assert base.get("GEMM cuBLAS", 0) > 0 and "GEMM cuBLAS via op" not in base
    assert custom.get("GEMM cuBLAS via op", 0) > 0 and "GEMM cuBLAS" not in custom
    assert profiles["custom"].calls["GEMM cuBLAS via op"] >= 6
