"""`invoke install --precompiled` for real in a container (docker + vllm_source tiers): the real vLLM
0.13.0 source, mounted at /workspace/vllm, installed editable by vLLM's own setup.py from a local wheel.

The plan is computed exactly as the task does (cached wheel resolution, csrc/ check, container path,
precompiled_plan) and its steps run one by one with `docker exec`, as the dev container runtime does.
No image registry or CUDA here, so: the container is the local test base (Debian, Python 3.11, a stub
non-editable `vllm` that the first step must remove); torch and vLLM's build requirements come from this
test venv, mounted read-only on PYTHONPATH (same Python minor version); and the local wheel's binary
is a stand-in — a real compiled CPython extension named vllm/_C.abi3.so, which setup.py extracts
from the wheel like vLLM's own, and which the verify step imports.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import uuid
import zipfile
from pathlib import Path

import pytest

from tests.support.vllm_source import make_fork_repo
from workbench.fork import install as inst
from workbench.runtime import Places

pytestmark = [pytest.mark.docker, pytest.mark.vllm_source]

ROOT = Path(__file__).resolve().parents[2]
PLACES = Places(fork="/workspace/vllm", kernels="/workspace/custom_kernels", patches="/workspace/patches",
                results="/workspace/results", wheels="/workspace/wheels", guest="/opt/workbench-src/workbench/guest",
                state="/opt/workbench", hf_cache="/cache/huggingface", ccache="/cache/ccache")
VENV_PATH = "/opt/workbench-venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
STUB_C = """#define Py_LIMITED_API 0x030B0000
#include <Python.h>
static struct PyModuleDef m = {PyModuleDef_HEAD_INIT, "_C", "stand-in for vllm._C", -1, NULL};
PyMODINIT_FUNC PyInit__C(void) { return PyModule_Create(&m); }
"""


def _stand_in_wheel(work: Path, wheels: Path) -> Path:
    """vllm-0.13.0-cp38-abi3-manylinux1_x86_64.whl holding a compiled vllm/_C.abi3.so."""
    (work / "vllm").mkdir(parents=True)
    (work / "c.c").write_text(STUB_C)
    include = sysconfig.get_paths()["include"]
    subprocess.run(["gcc", "-shared", "-fPIC", "-O1", f"-I{include}", str(work / "c.c"), "-o",
                    str(work / "vllm" / "_C.abi3.so")], check=True, capture_output=True)
    wheels.mkdir(parents=True, exist_ok=True)
    wheel = wheels / "vllm-0.13.0-cp38-abi3-manylinux1_x86_64.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.write(work / "vllm" / "_C.abi3.so", "vllm/_C.abi3.so")
        zf.writestr("vllm-0.13.0.dist-info/METADATA", "Metadata-Version: 2.1\nName: vllm\nVersion: 0.13.0\n")
        zf.writestr("vllm-0.13.0.dist-info/WHEEL", "Wheel-Version: 1.0\nRoot-Is-Purelib: false\n"
                                                   "Tag: cp38-abi3-manylinux1_x86_64\n")
        zf.writestr("vllm-0.13.0.dist-info/RECORD", "")
    return wheel


@pytest.fixture
def container(tmp_path):
    import docker

    if sys.version_info[:2] != (3, 11):
        pytest.skip("the test venv is mounted into the Python 3.11 test base: needs Python 3.11 here")
    if shutil.which("gcc") is None:
        pytest.skip("gcc is needed to compile the wheel's stand-in extension")
    image = os.environ.get("WORKBENCH_TEST_BASE_IMAGE") or subprocess.run(
        ["bash", str(ROOT / "tests" / "ci" / "build_test_base.sh"),
         os.environ.get("WORKBENCH_CACHE", str(Path.home() / ".cache" / "vllm-workbench"))],
        check=True, capture_output=True, text=True).stdout.strip()
    project = tmp_path / "project"
    fork = make_fork_repo("0.13.0", project / "vllm")
    shutil.copytree(ROOT / "custom_kernels", project / "custom_kernels",
                    ignore=shutil.ignore_patterns("*.egg-info", "__pycache__"))
    _stand_in_wheel(tmp_path / "build", project / "wheels")
    client = docker.from_env()
    ctr = client.containers.run(
        image, ["sleep", "infinity"], detach=True, init=True, name=f"wbtest-issue3-install-{uuid.uuid4().hex[:8]}",
        environment={"PYTHONPATH": "/opt/host-site"},
        volumes={str(fork): {"bind": PLACES.fork, "mode": "rw"},
                 str(project / "custom_kernels"): {"bind": PLACES.kernels, "mode": "rw"},
                 str(project / "wheels"): {"bind": PLACES.wheels, "mode": "ro"},
                 str(ROOT / "workbench" / "guest"): {"bind": PLACES.guest, "mode": "ro"},
                 sysconfig.get_paths()["purelib"]: {"bind": "/opt/host-site", "mode": "ro"}})
    try:
        # What Dockerfile.dev provides: the venv that sees the system site packages.
        rc, out = ctr.exec_run(["python3", "-m", "venv", "--system-site-packages", "/opt/workbench-venv"])
        assert rc == 0, out.decode()
        yield ctr, project, fork
    finally:
        ctr.remove(force=True)
        client.close()


def run_plan(ctr, plan: inst.InstallPlan) -> dict[str, str]:
    outputs = {}
    for step in plan.steps:
        rc, out = ctr.exec_run(step.cmd, environment={"PATH": VENV_PATH, **step.env}, workdir=step.workdir)
        outputs[step.name] = out.decode(errors="replace")
        assert rc == 0, f"{step.name} failed:\n{outputs[step.name][-3000:]}"
    return outputs


def test_precompiled_editable_install_of_the_real_source(container):
    ctr, project, fork = container
    rc, out = ctr.exec_run(["python3", "-c", "import vllm; print(vllm.__file__)"])
    assert out.decode().startswith("/usr/local/lib/python3")  # the image's non-editable stand-in

    version = "0.13.0"
    choice = inst.resolve_wheel(fork, version, None, project / "wheels")
    assert choice.kind == "cached" and choice.commit is not None
    assert inst.check_wheel_matches(fork, choice) == []
    from workbench.config import Settings
    from workbench.container.compose import load_spec
    from workbench.container.places import MountMap

    settings = Settings.from_mapping(ROOT, {"fork": str(fork), "wheels": str(project / "wheels")})
    location = MountMap.of(load_spec(settings, "none")).from_host(Path(choice.location))
    assert location == f"{PLACES.wheels}/vllm-0.13.0-cp38-abi3-manylinux1_x86_64.whl"
    plan = inst.precompiled_plan(PLACES, "python", version, choice, location, ["0.13.0/x.patch"], no_deps=True)
    outputs = run_plan(ctr, plan)

    assert "removing the non-editable vllm" in outputs["remove a non-editable vllm"]
    assert "[extract] vllm/_C.abi3.so" in outputs["install the fork editable over the precompiled wheel"] \
        or (fork / "vllm" / "_C.abi3.so").is_file()
    verify = outputs["verify vllm imports from the fork and vllm._C loads"]
    assert "imported from /workspace/vllm/vllm/__init__.py" in verify and "vllm._C loads" in verify
    # The fork on the host is what the container imports: an edit shows up without reinstalling.
    (fork / "vllm" / "workbench_probe.py").write_text("VALUE = 42\n")
    rc, out = ctr.exec_run(["python", "-c", "import vllm.workbench_probe as p; print(p.VALUE)"],
                           environment={"PATH": VENV_PATH})
    assert rc == 0 and out.decode().strip() == "42"
    rc, out = ctr.exec_run(["cat", PLACES.install_record])
    record = json.loads(out.decode())
    assert record["mode"] == "precompiled" and record["wheel"] == location
    assert record["commit"] == choice.commit and record["series"] == ["0.13.0/x.patch"] and record["time"]
