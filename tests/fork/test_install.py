"""Install planning: wheel resolution, the csrc/ check, jobs / arch choice and the in-container commands.

Wheel resolution runs against small real git repositories (tags, detached HEAD, upstream refs); the
container-side scripts (verify, provenance) are executed for real with this Python.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from workbench.errors import WorkbenchError
from workbench.fork import install as inst
from workbench.gpus import GpuInfo
from workbench.runtime import Places

ROOT = Path(__file__).resolve().parents[2]
# The dev container's places (what docker-compose.yml mounts; tests/container/test_places.py checks that).
PLACES = Places(fork="/workspace/vllm", kernels="/workspace/custom_kernels", patches="/workspace/patches",
                results="/workspace/results", wheels="/workspace/wheels", guest="/opt/workbench-src/workbench/guest",
                state="/opt/workbench", hf_cache="/cache/huggingface", ccache="/cache/ccache")
GB = 1024**3


def git(repo: Path, *args: str) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.com"}
    return subprocess.run(["git", *args], cwd=repo, env=env, check=True, capture_output=True,
                          text=True).stdout.strip()


@pytest.fixture
def fork(tmp_path) -> Path:
    """A small fork-shaped repo: release commit tagged v0.13.0, then a Python-only commit on top."""
    repo = tmp_path / "vllm"
    (repo / "csrc").mkdir(parents=True)
    (repo / "vllm").mkdir()
    (repo / "csrc" / "gemm.cu").write_text("__global__ void k() {}\n")
    (repo / "CMakeLists.txt").write_text("project(vllm)\n")
    (repo / "vllm" / "__init__.py").write_text("")
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "release")
    git(repo, "tag", "v0.13.0")
    (repo / "vllm" / "hook.py").write_text("x = 1\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "python-only change")
    return repo


def wheel_file(directory: Path, version: str = "0.13.0") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"vllm-{version}-cp38-abi3-manylinux1_x86_64.whl"
    path.write_bytes(b"PK")
    return path


# --------------------------------------------------------------------------------------- wheel resolution
def test_explicit_wheel_wins_and_its_commit_comes_from_the_name(fork, tmp_path):
    cached = wheel_file(tmp_path / "wheels")
    sha = git(fork, "rev-parse", "HEAD")
    explicit = f"https://wheels.vllm.ai/{sha}/vllm-0.13.1.dev5+g{sha[:9]}-cp38-abi3-manylinux1_x86_64.whl"
    choice = inst.resolve_wheel(fork, "0.13.0", explicit, cached.parent)
    assert (choice.kind, choice.location, choice.commit) == ("explicit", explicit, sha)
    release = inst.resolve_wheel(fork, "0.13.0", str(cached), cached.parent)
    assert release.commit == git(fork, "rev-parse", "v0.13.0")
    unknown = inst.resolve_wheel(fork, "0.13.0", "/x/custom.whl", cached.parent)
    assert unknown.commit is None and "cannot check" in inst.check_wheel_matches(fork, unknown)[0]


def test_cached_wheel_of_the_release_beats_the_merge_base(fork, tmp_path):
    wheel_file(tmp_path / "wheels", "0.12.0")  # another release: ignored
    cached = wheel_file(tmp_path / "wheels")
    git(fork, "update-ref", "refs/remotes/upstream/main", "HEAD")
    choice = inst.resolve_wheel(fork, "0.13.0", None, cached.parent)
    assert (choice.kind, choice.location) == ("cached", str(cached))
    assert choice.commit == git(fork, "rev-parse", "v0.13.0")


def test_merge_base_in_a_detached_head(fork, tmp_path):
    upstream = git(fork, "rev-parse", "v0.13.0")
    git(fork, "update-ref", "refs/remotes/upstream/main", upstream)
    git(fork, "checkout", "-q", "--detach", "HEAD")  # how a submodule sits: no branch
    (fork / "vllm" / "more.py").write_text("")
    git(fork, "add", "-A")
    git(fork, "commit", "-qm", "detached work")
    choice = inst.resolve_wheel(fork, "0.13.0", None, tmp_path / "no-wheels")
    assert (choice.kind, choice.commit) == ("commit", upstream)
    plan = inst.precompiled_plan(PLACES, "python", "0.13.0", choice, None, [])
    pip_step = plan.steps[1]
    assert pip_step.env["VLLM_PRECOMPILED_WHEEL_COMMIT"] == upstream  # setup.py's own branch lookup is skipped
    assert "VLLM_PRECOMPILED_WHEEL_LOCATION" not in pip_step.env


def test_release_tag_when_no_upstream_ref_and_error_when_nothing(fork, tmp_path):
    choice = inst.resolve_wheel(fork, "0.13.0", None, tmp_path / "none")
    assert choice.commit == git(fork, "rev-parse", "v0.13.0") and "release tag" in choice.reason
    git(fork, "tag", "-d", "v0.13.0")
    with pytest.raises(WorkbenchError, match=r"no precompiled wheel .*--wheel"):
        inst.resolve_wheel(fork, "0.13.0", None, tmp_path / "none")


@pytest.mark.parametrize(("change", "refused"), [
    (lambda r: (r / "vllm" / "hook.py").write_text("x = 2\n"), False),  # Python-only: wheel still fits
    (lambda r: (r / "csrc" / "gemm.cu").write_text("// tuned\n"), True),  # uncommitted C++ edit
    (lambda r: (r / "csrc" / "new_kernel.cu").write_text("\n"), True),  # untracked C++ file
    (lambda r: (r / "CMakeLists.txt").write_text("project(vllm CUDA)\n"), True),
])
def test_csrc_changes_refuse_the_precompiled_wheel(fork, tmp_path, change, refused):
    choice = inst.resolve_wheel(fork, "0.13.0", None, tmp_path / "none")
    change(fork)
    if refused:
        with pytest.raises(WorkbenchError, match=r"C\+\+/CUDA sources differ .*invoke install --full"):
            inst.check_wheel_matches(fork, choice)
    else:
        assert inst.check_wheel_matches(fork, choice) == []


def test_committed_csrc_change_is_seen_too(fork, tmp_path):
    (fork / "csrc" / "gemm.cu").write_text("// committed\n")
    git(fork, "commit", "-qam", "kernel change")
    choice = inst.resolve_wheel(fork, "0.13.0", None, tmp_path / "none")
    with pytest.raises(WorkbenchError, match=r"csrc/gemm\.cu"):
        inst.check_wheel_matches(fork, choice)


def test_container_paths(tmp_path):
    from workbench.config import Settings
    from workbench.container.compose import load_spec
    from workbench.container.places import MountMap

    settings = Settings.from_mapping(ROOT, {
        "fork": str(tmp_path / "vllm"), "wheels": str(tmp_path / "elsewhere" / "wheels"),
        "results": str(tmp_path / "results"), "hf_cache": str(tmp_path / "hf"),
    })
    mounts = MountMap.of(load_spec(settings, "none"))  # what docker-compose.yml declares, with these settings
    assert mounts.from_host(tmp_path / "elsewhere" / "wheels" / "a.whl") == "/workspace/wheels/a.whl"
    assert mounts.from_host(tmp_path / "vllm" / "x" / "y.py") == "/workspace/vllm/x/y.py"
    assert mounts.from_host(tmp_path / "results" / "r.json") == "/workspace/results/r.json"
    assert mounts.from_host(tmp_path / "other" / "a.whl") is None
    assert mounts.from_host(Path("/") / "opt" / "a.whl") is None


# --------------------------------------------------------------------------------------- jobs and arch
@pytest.mark.parametrize(("cores", "ram_gb", "jobs", "threads", "limit"), [
    (2, 24, 2, 1, "cores"),  # this CI machine
    (16, 128, 8, 2, "cores"),  # GPU host: 16 cores, 128 GB
    (64, 64, 9, 2, "RAM"),  # many cores, little RAM: 64 × 0.9 / (3 GB × 2 threads) = 9
    (8, 8, 2, 1, "RAM"),
    (1, 1, 1, 1, "cores"),
])
def test_jobs_from_cores_and_ram(cores, ram_gb, jobs, threads, limit):
    chosen = inst.choose_jobs(cores, ram_gb * GB)
    assert (chosen.max_jobs, chosen.nvcc_threads) == (jobs, threads)
    assert f"limited by {limit}" in chosen.reason and f"{cores} cores" in chosen.reason


def test_requested_jobs_warn_above_the_ram_budget():
    chosen = inst.choose_jobs(32, 16 * GB, requested=20)
    assert chosen.max_jobs == 20 and "expect swapping or OOM" in chosen.reason
    assert "expect" not in inst.choose_jobs(32, 256 * GB, requested=20).reason


def _gpu(index: int, cc: tuple[int, int]) -> GpuInfo:
    return GpuInfo(index=index, name="GPU", compute_capability=cc, memory_total_bytes=80 * GB,
                   memory_used_bytes=0, memory_free_bytes=80 * GB)


def test_arch_list_from_gpus_flag_or_a_clear_error():
    assert inst.arch_list([_gpu(0, (9, 0))], None) == "9.0a"
    assert inst.arch_list([_gpu(0, (9, 0)), _gpu(1, (8, 0))], None) == "8.0;9.0a"
    assert inst.arch_list([], "8.9") == "8.9"
    with pytest.raises(WorkbenchError, match=r"no NVIDIA GPU .*NVML unavailable.*--arch"):
        inst.arch_list([], None, "NVML unavailable")


# --------------------------------------------------------------------------------------- plans
def test_precompiled_plan_with_a_local_wheel():
    choice = inst.WheelChoice("cached", "/host/wheels/w.whl", "a" * 40, "cached")
    plan = inst.precompiled_plan(PLACES, "python", "0.13.0", choice, "/workspace/wheels/w.whl",
                                 ["0.13.0/0001.patch"], no_deps=True)
    names = [s.name for s in plan.steps]
    assert names[0] == "remove a non-editable vllm" and names[-1] == "record the install"
    pip = plan.steps[1]
    assert pip.cmd[-3:] == ["--no-deps", "-e", PLACES.fork] and "--no-build-isolation" in pip.cmd
    assert pip.workdir == PLACES.fork
    assert pip.env["VLLM_USE_PRECOMPILED"] == "1"
    assert pip.env["VLLM_PRECOMPILED_WHEEL_LOCATION"] == "/workspace/wheels/w.whl"
    assert pip.env["SETUPTOOLS_SCM_PRETEND_VERSION"] == "0.13.0"
    assert any(s.cmd[-1] == PLACES.kernels and "-e" in s.cmd for s in plan.steps)
    assert plan.provenance == {"mode": "precompiled", "wheel": "/workspace/wheels/w.whl", "commit": "a" * 40,
                               "arch_list": None, "series": ["0.13.0/0001.patch"], "version": "0.13.0"}
    assert plan.steps[-1].cmd[:3] == ["python", f"{PLACES.guest}/install_checks.py", "record"]
    assert plan.steps[-1].cmd[-1] == PLACES.install_record


def test_full_plan_env_ccache_and_stats():
    jobs = inst.choose_jobs(16, 128 * GB)
    plan = inst.full_plan(PLACES, "python", "0.13.0", "b" * 40, "9.0a", jobs, [])
    build = plan.steps[1]
    assert build.env["TORCH_CUDA_ARCH_LIST"] == "9.0a"
    assert jobs.nvcc_threads == 2 and build.env["NVCC_THREADS"] == "2"
    assert build.env["MAX_JOBS"] == str(jobs.max_jobs * 2)  # setup.py divides it by NVCC_THREADS
    assert build.env["CCACHE_DIR"] == PLACES.ccache and build.env["CCACHE_NOHASHDIR"] == "true"
    assert build.env["CMAKE_CUDA_COMPILER_LAUNCHER"] == "ccache"
    script = build.cmd[-1]
    assert "--no-build-isolation" in script and "ccache --show-stats" in script and "build time" in script
    assert plan.provenance["mode"] == "full" and plan.provenance["arch_list"] == "9.0a"
    assert any("MAX_JOBS" in note for note in plan.notes)


def test_rebuild_plan_presets():
    jobs = inst.Jobs(6, 2, "test")
    plan = inst.rebuild_plan(PLACES, "python", "9.0a", jobs)
    presets = json.loads(plan.steps[0].cmd[-1])
    cache = presets["configurePresets"][0]["cacheVariables"]
    assert cache["CMAKE_CUDA_COMPILER_LAUNCHER"] == "ccache" and cache["CMAKE_JOB_POOLS"] == "compile=6"
    assert cache["CMAKE_INSTALL_PREFIX"] == "${sourceDir}" and presets["buildPresets"][0]["jobs"] == 6
    assert plan.steps[0].cmd[-2] == f"{PLACES.fork}/CMakeUserPresets.json"
    assert cache["VLLM_PYTHON_EXECUTABLE"] == "@PYTHON@" and cache["CMAKE_CUDA_COMPILER"] == "@NVCC@"
    assert "cmake --build --preset release --target install" in plan.steps[1].cmd[-1]
    assert "\n" in "\n".join(plan.describe())


# ------------------------------------------------------------------------- the guest install steps, run for real
CHECKS = ROOT / "workbench" / "guest" / "install_checks.py"


def _verify(tmp_path: Path, fork: Path, c_module: str | None, against: Path | None = None):
    pkg = fork / "vllm"
    pkg.mkdir(parents=True, exist_ok=True)
    (pkg / "__init__.py").write_text("__version__ = '0.13.0'\n")
    if c_module is not None:
        (pkg / "_C.py").write_text(c_module)
    env = {**os.environ, "PYTHONPATH": str(fork)}
    plan = inst.precompiled_plan(PLACES, "python", "0.13.0", inst.WheelChoice("explicit", "w.whl", None, ""), "w.whl",
                                 [])
    verify = next(s for s in plan.steps if s.name.startswith("verify"))
    assert verify.cmd[1:3] == [f"{PLACES.guest}/install_checks.py", "verify"]
    cmd = [sys.executable, str(CHECKS), "verify", str(against or fork)]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=tmp_path)


def test_verify_step_accepts_the_fork(tmp_path):
    result = _verify(tmp_path, tmp_path / "ws" / "vllm", "")
    assert result.returncode == 0 and "vllm._C loads" in result.stdout


def test_verify_step_explains_an_abi_mismatch(tmp_path):
    result = _verify(tmp_path, tmp_path / "ws" / "vllm",
                     "raise ImportError('/ws/vllm/_C.abi3.so: undefined symbol: _ZN3c104cuda9SetDeviceEi')")
    assert result.returncode == 1 and "ABI mismatch" in result.stderr and "--full" in result.stderr


def test_verify_step_refuses_a_vllm_from_elsewhere(tmp_path):
    result = _verify(tmp_path, tmp_path / "ws" / "vllm", "", against=tmp_path / "somewhere-else")
    assert result.returncode == 1 and "not the fork" in result.stderr


def test_rebuild_extends_the_install_record(tmp_path):
    target = tmp_path / "install.json"
    target.write_text(json.dumps({"mode": "full", "commit": "c" * 40, "series": ["0.13.0/1.patch"]}))
    step = inst.rebuild_plan(PLACES, "python", "9.0a", inst.Jobs(2, 1, "t")).steps[-1]
    assert step.cmd[2:] == ["record-rebuild", PLACES.install_record, "9.0a"]
    subprocess.run([sys.executable, str(CHECKS), "record-rebuild", str(target), "9.0a"], check=True,
                   capture_output=True)
    record = json.loads(target.read_text())
    assert record["mode"] == "full" and record["series"] == ["0.13.0/1.patch"]
    assert record["rebuild"]["arch_list"] == "9.0a" and record["rebuild"]["time"].endswith("Z")


def test_record_step_writes_json(tmp_path):
    target = tmp_path / "opt" / "workbench" / "install.json"
    record = {"mode": "precompiled", "wheel": "w.whl", "commit": None, "arch_list": None, "series": []}
    subprocess.run([sys.executable, str(CHECKS), "record", json.dumps(record), str(target)], check=True,
                   capture_output=True)
    written = json.loads(target.read_text())
    assert {k: written[k] for k in record} == record and written["time"].endswith("Z")
    assert written["python"] == sys.executable


def test_write_presets_fills_in_the_interpreter(tmp_path):
    presets = json.dumps(inst.cmake_presets("9.0a", inst.Jobs(2, 1, "t")))
    subprocess.run([sys.executable, str(CHECKS), "write-presets", str(tmp_path / "p.json"), presets], check=True,
                   capture_output=True)
    cache = json.loads((tmp_path / "p.json").read_text())["configurePresets"][0]["cacheVariables"]
    assert cache["VLLM_PYTHON_EXECUTABLE"] == sys.executable and cache["CMAKE_CUDA_COMPILER"].endswith("nvcc")


def test_the_checks_script_refuses_a_bad_call():
    done = subprocess.run([sys.executable, str(CHECKS), "verify"], capture_output=True, text=True)
    assert done.returncode == 2 and "remove-non-editable" in done.stderr


# --------------------------------------------------------------------------------------- the tasks, as a user runs them
def _invoke(args: list[str], fork: Path, wheels: Path) -> subprocess.CompletedProcess:
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "INVOKE_WORKBENCH_FORK": str(fork), "INVOKE_WORKBENCH_WHEELS": str(wheels)}
    return subprocess.run([sys.executable, "-m", "invoke", "-r", str(root), *args], env=env,
                          capture_output=True, text=True, timeout=120)


def test_install_dry_run_with_a_local_wheel(fork, tmp_path):
    wheel = wheel_file(tmp_path / "wheels")
    result = _invoke(["install", "--precompiled", "--dry-run", "--no-deps"], fork, wheel.parent)
    assert result.returncode == 0, result.stderr
    assert "cached wheel of the fork's release 0.13.0" in result.stdout
    assert f"VLLM_PRECOMPILED_WHEEL_LOCATION=/workspace/wheels/{wheel.name}" in result.stdout
    assert "pip install --no-build-isolation --no-deps -e /workspace/vllm" in result.stdout
    elsewhere = wheel_file(tmp_path / "downloads")
    explicit = _invoke(["install", "--wheel", str(elsewhere), "--dry-run"], fork, wheel.parent)
    assert explicit.returncode == 0, explicit.stderr
    assert "would copy" in explicit.stdout and not (tmp_path / "wheels" / "x").exists()


def _setup_py_num_jobs(setup_py: Path, env: dict[str, str]) -> tuple[int, int | None]:
    """The release's own cmake_build_ext.compute_num_jobs, lifted out of its setup.py and run with the build's
    environment on a CUDA host with nvcc 12.8 (the only inputs it reads besides the CPU count)."""
    import ast
    import logging
    from types import SimpleNamespace

    from packaging.version import Version

    tree = ast.parse(setup_py.read_text())
    method = next(node for node in ast.walk(tree)
                  if isinstance(node, ast.FunctionDef) and node.name == "compute_num_jobs")
    namespace = {"envs": SimpleNamespace(MAX_JOBS=env.get("MAX_JOBS"), NVCC_THREADS=env.get("NVCC_THREADS")),
                 "os": os, "logger": logging.getLogger("setup.py"), "Version": Version, "CUDA_HOME": "/cuda",
                 "_is_cuda": lambda: True, "get_nvcc_cuda_version": lambda: Version("12.8")}
    exec(compile(ast.Module(body=[method], type_ignores=[]), str(setup_py), "exec"), namespace)
    return namespace["compute_num_jobs"](None)


@pytest.mark.vllm_source
@pytest.mark.parametrize("version", ["0.13.0", "0.24.0", "0.33.0"])
@pytest.mark.parametrize(("cores", "ram_gb"), [(64, 512), (16, 64), (8, 32)])
def test_the_releases_setup_py_runs_the_chosen_number_of_jobs(version, cores, ram_gb):
    from tests.support.vllm_source import vllm_source_tree

    jobs = inst.choose_jobs(cores, ram_gb * GB)
    env = inst.build_env("9.0a", jobs, "/ccache")
    assert _setup_py_num_jobs(vllm_source_tree(version) / "setup.py", env) == (jobs.max_jobs, jobs.nvcc_threads)


def test_install_refusals_are_one_line(fork, tmp_path):
    wheel = wheel_file(tmp_path / "wheels")
    (fork / "csrc" / "gemm.cu").write_text("// my kernel\n")
    refused = _invoke(["install", "--dry-run"], fork, wheel.parent)
    assert refused.returncode == 1 and refused.stderr.count("\n") == 1
    assert "csrc/gemm.cu" in refused.stderr and "invoke install --full" in refused.stderr
    no_gpu = _invoke(["install", "--full", "--dry-run"], fork, wheel.parent)
    if no_gpu.returncode == 0:
        pytest.skip("this host has an NVIDIA GPU: the no-GPU message does not apply")
    assert no_gpu.stderr.count("\n") == 1 and "--arch" in no_gpu.stderr
    full = _invoke(["install", "--full", "--arch", "9.0a", "--jobs", "3", "--dry-run"], fork, wheel.parent)
    assert full.returncode == 0, full.stderr
    assert "TORCH_CUDA_ARCH_LIST=9.0a" in full.stdout and "MAX_JOBS=3" in full.stdout
    assert "CCACHE_NOHASHDIR=true" in full.stdout
