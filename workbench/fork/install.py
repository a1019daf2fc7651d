"""Install the vLLM fork into the dev container: precompiled (a wheel's compiled extensions + the fork's
Python, editable), full (compile csrc/ with nvcc + ccache), or incremental rebuild (CMake presets).

Everything here is pure: functions take facts (versions, commits, cores, RAM, GPUs) and the runtime's
places and interpreter, and return the choice or the list of commands with their environment, so each
rule is unit-tested. The task in workbench/tasks/install.py runs the plan through the runtime (the dev
container, or this host's workbench.python); the Python steps are workbench/guest/install_checks.py.
"""

from __future__ import annotations

import json
import re
import shlex
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from workbench.errors import WorkbenchError
from workbench.git import output as _git
from workbench.runtime import Places

# Paths whose changes need a compile: a precompiled wheel only matches a fork with these unchanged.
COMPILED_PATHS = ("csrc", "CMakeLists.txt", "cmake")
GB = 1024**3
# Peak resident memory of one nvcc process on vLLM's heaviest units (CUTLASS / Marlin / FlashAttention
# templates) is 2–4 GB; budget the middle of that per nvcc thread.
GB_PER_NVCC_THREAD = 3


# --------------------------------------------------------------------------------------- wheels
@dataclass(frozen=True)
class WheelChoice:
    """Which precompiled wheel an install uses and why. ``location`` is a path or URL for
    VLLM_PRECOMPILED_WHEEL_LOCATION; ``commit`` is the commit the wheel's binaries were built from."""

    kind: str  # "explicit" | "cached" | "commit"
    location: str | None
    commit: str | None
    reason: str


def _commit_of(fork: Path, rev: str) -> str | None:
    return _git(fork, "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}")


def wheel_version(filename: str) -> str | None:
    """The version field of a wheel file name (``vllm-0.13.0-cp38-abi3-manylinux1_x86_64.whl`` -> 0.13.0)."""
    m = re.match(r"^vllm-([^-]+)-", Path(filename.split("?")[0]).name)
    return m.group(1).replace("%2B", "+") if m else None


def wheel_commit(fork: Path, filename: str) -> str | None:
    """The commit a vLLM wheel was built from: a release version -> its tag; a dev build -> its +g<sha>."""
    version = wheel_version(filename)
    if version is None:
        return None
    m = re.search(r"\+g([0-9a-f]{7,40})", version)
    if m:
        return _commit_of(fork, m.group(1))
    m = re.fullmatch(r"(\d+\.\d+\.\d+)(\+.*)?", version)
    return _commit_of(fork, f"v{m.group(1)}") if m else None


def cached_wheels(wheel_dir: Path, version: str, machine: str = "x86_64") -> list[Path]:
    """Release wheels of ``version`` for this machine in the wheel cache, newest file first."""
    if not wheel_dir.is_dir():
        return []
    found = [p for p in wheel_dir.glob("vllm-*.whl")
             if (wheel_version(p.name) or "").split("+")[0] == version and machine in p.name]
    return sorted(found, key=lambda p: p.stat().st_mtime, reverse=True)


def resolve_wheel(fork: Path, version: str, explicit: str | None, wheel_dir: Path,
                  upstream_refs: tuple[str, ...] = ("upstream/main", "origin/main"),
                  machine: str = "x86_64") -> WheelChoice:
    """Pick the precompiled wheel: explicit --wheel > a cached wheel of the fork's release > the wheel
    of the merge-base commit (handed to setup.py as VLLM_PRECOMPILED_WHEEL_COMMIT, so its own lookup —
    which needs a branch and fails in a detached-HEAD submodule — is skipped)."""
    if explicit:
        explicit = check_wheel_argument(explicit)
        commit = wheel_commit(fork, explicit)
        why = f"--wheel {explicit}" + ("" if commit else " (its commit is unknown: csrc/ cannot be checked)")
        return WheelChoice("explicit", explicit, commit, why)
    cached = cached_wheels(wheel_dir, version, machine)
    if cached:
        commit = _commit_of(fork, f"v{version}")
        return WheelChoice("cached", str(cached[0]), commit, f"cached wheel of the fork's release {version}")
    for ref in upstream_refs:
        if _commit_of(fork, ref):
            base = _git(fork, "merge-base", "HEAD", ref)
            if base:
                return WheelChoice("commit", None, base, f"merge-base of HEAD and {ref} (works in detached HEAD)")
    tag = _commit_of(fork, f"v{version}")
    if tag and _git(fork, "merge-base", "--is-ancestor", tag, "HEAD") is not None:
        return WheelChoice("commit", None, tag, f"release tag v{version}, an ancestor of HEAD")
    raise WorkbenchError(
        f"no precompiled wheel for this fork: pass --wheel PATH|URL, put vllm-{version}-*.whl in {wheel_dir}, "
        f"or fetch upstream so the merge-base is known (`git -C vllm fetch https://github.com/vllm-project/vllm "
        f"main:refs/remotes/upstream/main`)")


def wheel_url_for_commit(commit: str) -> str:
    """vLLM's per-commit wheel index, as setup.py reads it (VLLM_PRECOMPILED_WHEEL_COMMIT)."""
    return f"https://wheels.vllm.ai/{commit}/vllm/"


def compiled_changes(fork: Path, commit: str) -> list[str]:
    """Files under csrc/, cmake/, CMakeLists.txt that differ between ``commit`` and the fork's working
    tree (committed, uncommitted and untracked): a wheel built at ``commit`` can't contain them."""
    changed = _git(fork, "diff", "--name-only", commit, "--", *COMPILED_PATHS)
    if changed is None:
        raise WorkbenchError(f"the wheel's commit {commit[:12]} is not in the fork: fetch it "
                             f"(`git -C vllm fetch upstream`) or pass --wheel with a matching wheel")
    untracked = _git(fork, "ls-files", "--others", "--exclude-standard", "--", *COMPILED_PATHS) or ""
    return sorted({*changed.split(), *untracked.split()})


def check_wheel_matches(fork: Path, wheel: WheelChoice) -> list[str]:
    """Refuse (WorkbenchError) when the fork's compiled sources differ from the wheel's commit; return
    warnings otherwise (e.g. an explicit wheel of unknown commit)."""
    if wheel.commit is None:
        return [f"cannot check csrc/ against {wheel.location}: its commit is unknown"]
    changed = compiled_changes(fork, wheel.commit)
    if changed:
        shown = ", ".join(changed[:5]) + (f" and {len(changed) - 5} more" if len(changed) > 5 else "")
        raise WorkbenchError(
            f"the fork's C++/CUDA sources differ from the wheel's commit {wheel.commit[:12]} ({shown}): a "
            f"precompiled wheel can't contain them — build them: `invoke install --full`")
    return []


# --------------------------------------------------------------------------------------- build resources
@dataclass(frozen=True)
class Jobs:
    max_jobs: int
    nvcc_threads: int
    reason: str


def choose_jobs(cores: int, ram_bytes: int, requested: int | None = None) -> Jobs:
    """MAX_JOBS and NVCC_THREADS from cores and RAM: each nvcc thread may peak at ~3 GB (2–4 GB measured
    range), so jobs × threads × 3 GB stays within 90 % of RAM and jobs × threads within the cores."""
    cores = max(1, cores)
    ram_gb = ram_bytes / GB
    threads = 2 if cores >= 16 else 1  # NVCC_THREADS splits multi-arch compiles; only worth it with cores to spare
    by_cpu = max(1, cores // threads)
    by_ram = max(1, int(ram_gb * 0.9 // (GB_PER_NVCC_THREAD * threads)))
    if requested:
        jobs = requested
        reason = f"--jobs {requested}"
        if requested > by_ram:
            reason += (f" (above the {by_ram} that {ram_gb:.0f} GB of RAM allows at ~{GB_PER_NVCC_THREAD} GB "
                       f"per nvcc thread: expect swapping or OOM kills)")
    else:
        jobs = min(by_cpu, by_ram)
        limit = "RAM" if by_ram < by_cpu else "cores"
        reason = (f"{cores} cores, {ram_gb:.0f} GB RAM: {by_cpu} by cores, {by_ram} by RAM at "
                  f"~{GB_PER_NVCC_THREAD} GB per nvcc thread × NVCC_THREADS={threads}; limited by {limit}")
    return Jobs(jobs, threads, reason)


def host_resources() -> tuple[int, int]:
    """(usable cores, total RAM bytes) of this machine (the container shares the host's)."""
    import os

    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 1
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return cores, ram


# torch.utils.cpp_extension's named architectures (TORCH_CUDA_ARCH_LIST accepts them beside numbers).
NAMED_ARCHES = ("Kepler+Tesla", "Kepler", "Maxwell+Tegra", "Maxwell", "Pascal", "Volta+Tegra", "Volta", "Turing",
                "Ampere+Tegra", "Ampere", "Ada", "Hopper", "Blackwell")
_ARCH = re.compile(r"^\d+\.\d+[af]?(\+PTX)?$")


def check_arch(arch: str) -> str:
    """A TORCH_CUDA_ARCH_LIST value (``9.0a``, ``8.0;9.0a``, ``8.6+PTX``, ``Hopper``), or a one-line error:
    nvcc would otherwise fail minutes into a full build."""
    entries = [e for e in re.split(r"[;\s]+", arch.strip()) if e]
    bad = [e for e in entries if not _ARCH.match(e) and e not in NAMED_ARCHES]
    if not entries or bad:
        raise WorkbenchError(f"--arch {arch!r} is not a TORCH_CUDA_ARCH_LIST ({', '.join(bad) or 'empty'}): give "
                             "compute capabilities like 9.0a (H100/H200), 8.0 (A100) or '8.0;9.0a'")
    return ";".join(entries)


def check_wheel_argument(wheel: str) -> str:
    """--wheel as given: a .whl file path or an http(s)/file URL of one; anything else is refused here,
    before the container is touched (pip would fail mid-install)."""
    from urllib.parse import urlparse

    text = wheel.strip()
    if "://" in text:
        url = urlparse(text)
        ok_host = url.scheme == "file" or bool(url.netloc)
        if url.scheme not in ("http", "https", "file") or not ok_host or not url.path.split("?")[0].endswith(".whl"):
            raise WorkbenchError(f"--wheel {wheel!r} is not a wheel URL: give https://HOST/PATH/vllm-VERSION-*.whl "
                                 "or the path of a .whl file")
        return text
    if not text.endswith(".whl"):
        raise WorkbenchError(f"--wheel {wheel!r} is not a wheel: give a vllm-VERSION-*.whl file or its https:// URL")
    return text


def arch_list(gpus: list, arch: str | None, why: str = "") -> str:
    """TORCH_CUDA_ARCH_LIST: --arch when given, else the selected GPUs' compute capabilities via NVML."""
    if arch:
        return check_arch(arch)
    if not gpus:
        detail = f" ({why})" if why else ""
        raise WorkbenchError(f"no NVIDIA GPU selected or visible{detail} to pick TORCH_CUDA_ARCH_LIST from: "
                             f"pass --arch, e.g. --arch '9.0a' for H100/H200 or --arch '8.0;9.0a'")
    from workbench.gpus import torch_cuda_arch_list

    return torch_cuda_arch_list(gpus)


# --------------------------------------------------------------------------------------- plans
@dataclass
class Step:
    name: str
    cmd: list[str]
    env: dict[str, str] = field(default_factory=dict)
    workdir: str | None = None
    # A compile whose ninja counts its work ("[k/N]"): shown as a bar with ETA, its output kept in a log file.
    counted: bool = False


@dataclass
class InstallPlan:
    mode: str
    steps: list[Step]
    provenance: dict
    notes: list[str] = field(default_factory=list)

    def describe(self) -> list[str]:
        """Shell-like lines for --dry-run."""
        lines = []
        for s in self.steps:
            env = " ".join(f"{k}={shlex.quote(v)}" for k, v in sorted(s.env.items()))
            lines.append(f"# {s.name}\n{'cd ' + s.workdir + ' && ' if s.workdir else ''}"
                         f"{env + ' ' if env else ''}{shlex.join(s.cmd)}")
        return lines


CHECKS = "install_checks.py"  # the guest script with the Python steps


def _checks(places: Places, python: str, *args: str) -> list[str]:
    return [python, places.guest_script(CHECKS), *args]


def _common_steps(places: Places, python: str, provenance: dict) -> tuple[list[Step], list[Step]]:
    before = [Step("remove a non-editable vllm", _checks(places, python, "remove-non-editable"))]
    after = [
        Step("install custom_kernels (editable)",
             [python, "-m", "pip", "install", "--no-build-isolation", "--no-deps", "-e", places.kernels]),
        Step("verify vllm imports from the fork and vllm._C loads", _checks(places, python, "verify", places.fork)),
        Step("record the install", _checks(places, python, "record", json.dumps(provenance), places.install_record)),
    ]
    return before, after


def _version_env(version: str) -> dict[str, str]:
    # In the container the submodule's .git points at the host's .git/modules (not mounted), so
    # setuptools-scm can't read the version there: pass the one read on the host.
    return {"SETUPTOOLS_SCM_PRETEND_VERSION": version, "SETUPTOOLS_SCM_PRETEND_VERSION_FOR_VLLM": version}


def precompiled_plan(places: Places, python: str, version: str, wheel: WheelChoice, wheel_location: str | None,
                     series: list[str], no_deps: bool = False) -> InstallPlan:
    """Editable install of the fork's Python over a wheel's compiled extensions (VLLM_USE_PRECOMPILED)."""
    env = {"VLLM_USE_PRECOMPILED": "1", **_version_env(version)}
    if wheel_location:
        env["VLLM_PRECOMPILED_WHEEL_LOCATION"] = wheel_location
    elif wheel.commit:
        env["VLLM_PRECOMPILED_WHEEL_COMMIT"] = wheel.commit
    provenance = {"mode": "precompiled", "wheel": wheel_location or (wheel_url_for_commit(wheel.commit)
                                                                   if wheel.commit else None),
                  "commit": wheel.commit, "arch_list": None, "series": series, "version": version}
    before, after = _common_steps(places, python, provenance)
    pip = [python, "-m", "pip", "install", "--no-build-isolation", *(["--no-deps"] if no_deps else []),
           "-e", places.fork]
    steps = [*before, Step("install the fork editable over the precompiled wheel", pip, env, places.fork), *after]
    return InstallPlan("precompiled", steps, provenance, [f"wheel: {wheel.reason}"])


def build_env(arch: str, jobs: Jobs, ccache_dir: str) -> dict[str, str]:
    """Environment of a compile: arch list, parallelism and ccache (NOHASHDIR: hits survive path changes)."""
    return {
        "TORCH_CUDA_ARCH_LIST": arch,
        # vLLM's setup.py (compute_num_jobs, every shipped release) runs MAX_JOBS // NVCC_THREADS compile jobs:
        # hand it the product, or the count chosen here is divided a second time.
        "MAX_JOBS": str(jobs.max_jobs * jobs.nvcc_threads),
        "NVCC_THREADS": str(jobs.nvcc_threads),
        "CCACHE_DIR": ccache_dir,
        "CCACHE_NOHASHDIR": "true",
        "CMAKE_C_COMPILER_LAUNCHER": "ccache",
        "CMAKE_CXX_COMPILER_LAUNCHER": "ccache",
        "CMAKE_CUDA_COMPILER_LAUNCHER": "ccache",
    }


def full_plan(places: Places, python: str, version: str, commit: str | None, arch: str, jobs: Jobs,
              series: list[str], no_deps: bool = False) -> InstallPlan:
    """Compile the fork (csrc/) with nvcc through ccache and install it editable, build time and hit stats shown."""
    env = {**build_env(arch, jobs, places.ccache), **_version_env(version)}
    provenance = {"mode": "full", "wheel": None, "commit": commit, "arch_list": arch, "series": series,
                  "version": version, "max_jobs": jobs.max_jobs, "nvcc_threads": jobs.nvcc_threads}
    before, after = _common_steps(places, python, provenance)
    pip = shlex.join([python, "-m", "pip", "install", "--no-build-isolation", *(["--no-deps"] if no_deps else []),
                      "-v", "-e", places.fork])
    script = (f"set -e; ccache --zero-stats >/dev/null; start=$(date +%s); {pip}; "
              f"echo \"build time: $(( $(date +%s) - start )) s\"; ccache --show-stats")
    steps = [*before, Step("compile and install the fork editable (full build)", ["bash", "-c", script], env,
                           places.fork, counted=True), *after]
    return InstallPlan("full", steps, provenance, [f"TORCH_CUDA_ARCH_LIST={arch}",
                                                   f"MAX_JOBS={env['MAX_JOBS']} NVCC_THREADS={jobs.nvcc_threads} "
                                                   f"({jobs.max_jobs} compile jobs): {jobs.reason}"])


def cmake_presets(arch: str, jobs: Jobs, python: str = "@PYTHON@", nvcc: str = "@NVCC@") -> dict:
    """A CMakeUserPresets.json equivalent to vLLM's tools/generate_cmake_presets.py, with our job count
    (its own uses cores only, no RAM bound) and ccache launchers; installs the .so files into the tree.
    The interpreter and nvcc default to placeholders the runtime fills in (install_checks write-presets)."""
    cache = {
        "CMAKE_CUDA_COMPILER": nvcc,
        "CMAKE_BUILD_TYPE": "Release",
        "VLLM_PYTHON_EXECUTABLE": python,
        "CMAKE_INSTALL_PREFIX": "${sourceDir}",
        "CMAKE_CUDA_FLAGS": "",
        "NVCC_THREADS": str(jobs.nvcc_threads),
        "TORCH_CUDA_ARCH_LIST": arch,
        "CMAKE_JOB_POOLS": f"compile={jobs.max_jobs}",
        **{f"CMAKE_{lang}_COMPILER_LAUNCHER": "ccache" for lang in ("C", "CXX", "CUDA")},
    }
    return {
        "version": 6,
        "cmakeMinimumRequired": {"major": 3, "minor": 26, "patch": 1},
        "configurePresets": [{"name": "release", "binaryDir": "${sourceDir}/cmake-build-release",
                              "generator": "Ninja", "cacheVariables": cache}],
        "buildPresets": [{"name": "release", "configurePreset": "release", "jobs": jobs.max_jobs}],
    }


def rebuild_plan(places: Places, python: str, arch: str, jobs: Jobs) -> InstallPlan:
    """Incremental csrc/ build: regenerate the CMake preset, configure, build and install the .so files."""
    env = {k: v for k, v in build_env(arch, jobs, places.ccache).items()
           if k.startswith("CCACHE") or k == "TORCH_CUDA_ARCH_LIST"}
    presets = json.dumps(cmake_presets(arch, jobs), indent=2)
    script = ("set -e; ccache --zero-stats >/dev/null; start=$(date +%s); cmake --preset release; "
              "cmake --build --preset release --target install; "
              "echo \"rebuild time: $(( $(date +%s) - start )) s\"; ccache --show-stats")
    steps = [
        Step("write CMakeUserPresets.json (git-ignored by vLLM)",
             _checks(places, python, "write-presets", f"{places.fork}/CMakeUserPresets.json", presets)),
        Step("configure, build and install csrc/ incrementally", ["bash", "-c", script], env, places.fork,
             counted=True),
        Step("verify vllm imports from the fork and vllm._C loads", _checks(places, python, "verify", places.fork)),
        Step("record the rebuild in the install record",
             _checks(places, python, "record-rebuild", places.install_record, arch)),
    ]
    provenance = {"mode": "rebuild", "arch_list": arch, "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    return InstallPlan("rebuild", steps, provenance, [f"TORCH_CUDA_ARCH_LIST={arch}",
                                                      f"jobs={jobs.max_jobs} NVCC_THREADS={jobs.nvcc_threads}: "
                                                      f"{jobs.reason}"])


def provenance_json(plan: InstallPlan) -> str:
    return json.dumps(asdict(plan)["provenance"], indent=2)
