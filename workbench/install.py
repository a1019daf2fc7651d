"""Install the vLLM fork into the dev container: precompiled (a wheel's compiled extensions + the fork's
Python, editable), full (compile csrc/ with nvcc + ccache), or incremental rebuild (CMake presets).

Everything here is pure: functions take facts (versions, commits, cores, RAM, GPUs) and return the
choice or the list of in-container commands with their environment, so each rule is unit-tested. The
task in workbench/tasks/install.py runs the plan through ``workbench.engine.exec_in_container``.
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

CONTAINER_FORK = "/workspace/vllm"
CONTAINER_KERNELS = "/workspace/custom_kernels"
CONTAINER_WHEELS = "/workspace/wheels"
CCACHE_DIR = "/cache/ccache"
PROVENANCE = "/opt/workbench/install.json"
PYTHON = "python"  # the container's venv python (/opt/workbench-venv/bin is first on PATH)
NVCC = "/usr/local/cuda/bin/nvcc"
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


def head_commit(fork: Path) -> str | None:
    """The fork's HEAD commit (None outside a git checkout)."""
    return _git(fork, "rev-parse", "HEAD")


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


def container_path(host_path: Path, mounts: dict[Path, str]) -> str | None:
    """Where a host file under one of the mounted folders appears in the dev container (None: not visible)."""
    host = Path(host_path).resolve()
    for folder, target in mounts.items():
        try:
            rel = host.relative_to(Path(folder).resolve())
        except ValueError:
            continue
        if rel.parts:
            return f"{target}/{rel.as_posix()}"
    return None


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


# Removes a regular (non-editable) vllm so the editable fork is the one Python imports.
_REMOVE_NON_EDITABLE = r"""
import importlib.metadata as md, json, os, subprocess, sys
try:
    dist = md.distribution("vllm")
except md.PackageNotFoundError:
    sys.exit(0)
direct = json.loads(dist.read_text("direct_url.json") or "{}")
if direct.get("dir_info", {}).get("editable"):
    print("vllm is already an editable install:", direct.get("url"))
    sys.exit(0)
where = str(dist.locate_file(""))
print("removing the non-editable vllm", dist.version, "from", where)
# A vllm outside this venv (the base image's system install) belongs to the base interpreter.
inside = os.path.realpath(where).startswith(os.path.realpath(sys.prefix) + os.sep)
python = sys.executable if inside else os.path.join(sys.base_prefix, "bin", "python3")
env = {**os.environ, "PIP_BREAK_SYSTEM_PACKAGES": "1"}
if subprocess.call([python, "-m", "pip", "uninstall", "-y", "vllm"], env=env) != 0:
    sys.exit(f"error: cannot remove the non-editable vllm in {where} (not writable?): rebuild the dev image "
             "(`invoke build`: Dockerfile.dev removes it) or remove it as root")
"""

# Proves the install: vllm imports from the mounted fork and its compiled extension loads.
_VERIFY = r"""
import os, sys
fork = sys.argv[1]
import vllm
path = os.path.realpath(vllm.__file__)
print(f"vllm {vllm.__version__} imported from {path}")
if not path.startswith(fork.rstrip("/") + "/"):
    sys.exit(f"error: vllm imports from {path}, not the mounted fork {fork}: another vllm shadows it; "
             "rerun `invoke install` (it removes non-editable copies)")
try:
    import vllm._C  # noqa: F401
except ImportError as err:
    msg = str(err)
    if "undefined symbol" in msg:
        sys.exit(f"error: vllm._C does not load ({msg.split(':')[-1].strip()} undefined): an ABI mismatch - "
                 "the compiled extension was built against another torch/CUDA than this image's; use a wheel "
                 "built for this torch, or compile: `invoke install --full`")
    sys.exit(f"error: vllm._C does not load ({msg}): reinstall (`invoke install`) or compile (`--full`)")
print("vllm._C loads")
"""

_WRITE_PROVENANCE = r"""
import json, os, sys, time
record = json.loads(sys.argv[1])
record["time"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
os.makedirs(os.path.dirname(sys.argv[2]), exist_ok=True)
with open(sys.argv[2] + ".tmp", "w") as fh:
    json.dump(record, fh, indent=2)
os.replace(sys.argv[2] + ".tmp", sys.argv[2])
print("provenance:", sys.argv[2])
"""


def _common_steps(version: str, provenance: dict) -> tuple[list[Step], list[Step]]:
    before = [Step("remove a non-editable vllm", [PYTHON, "-c", _REMOVE_NON_EDITABLE])]
    after = [
        Step("install custom_kernels (editable)",
             [PYTHON, "-m", "pip", "install", "--no-build-isolation", "--no-deps", "-e", CONTAINER_KERNELS]),
        Step("verify vllm imports from the fork and vllm._C loads", [PYTHON, "-c", _VERIFY, CONTAINER_FORK]),
        Step("record provenance", [PYTHON, "-c", _WRITE_PROVENANCE, json.dumps(provenance), PROVENANCE]),
    ]
    return before, after


def _version_env(version: str) -> dict[str, str]:
    # In the container the submodule's .git points at the host's .git/modules (not mounted), so
    # setuptools-scm can't read the version there: pass the one read on the host.
    return {"SETUPTOOLS_SCM_PRETEND_VERSION": version, "SETUPTOOLS_SCM_PRETEND_VERSION_FOR_VLLM": version}


def precompiled_plan(version: str, wheel: WheelChoice, wheel_location: str | None, series: list[str],
                     no_deps: bool = False) -> InstallPlan:
    """Editable install of the fork's Python over a wheel's compiled extensions (VLLM_USE_PRECOMPILED)."""
    env = {"VLLM_USE_PRECOMPILED": "1", **_version_env(version)}
    if wheel_location:
        env["VLLM_PRECOMPILED_WHEEL_LOCATION"] = wheel_location
    elif wheel.commit:
        env["VLLM_PRECOMPILED_WHEEL_COMMIT"] = wheel.commit
    provenance = {"mode": "precompiled", "wheel": wheel_location or (wheel_url_for_commit(wheel.commit)
                                                                   if wheel.commit else None),
                  "commit": wheel.commit, "arch_list": None, "series": series, "version": version}
    before, after = _common_steps(version, provenance)
    pip = [PYTHON, "-m", "pip", "install", "--no-build-isolation", *(["--no-deps"] if no_deps else []),
           "-e", CONTAINER_FORK]
    steps = [*before, Step("install the fork editable over the precompiled wheel", pip, env, CONTAINER_FORK), *after]
    return InstallPlan("precompiled", steps, provenance, [f"wheel: {wheel.reason}"])


def build_env(arch: str, jobs: Jobs) -> dict[str, str]:
    """Environment of a compile: arch list, parallelism and ccache (NOHASHDIR: hits survive path changes)."""
    return {
        "TORCH_CUDA_ARCH_LIST": arch,
        "MAX_JOBS": str(jobs.max_jobs),
        "NVCC_THREADS": str(jobs.nvcc_threads),
        "CCACHE_DIR": CCACHE_DIR,
        "CCACHE_NOHASHDIR": "true",
        "CMAKE_C_COMPILER_LAUNCHER": "ccache",
        "CMAKE_CXX_COMPILER_LAUNCHER": "ccache",
        "CMAKE_CUDA_COMPILER_LAUNCHER": "ccache",
    }


def full_plan(version: str, commit: str | None, arch: str, jobs: Jobs, series: list[str],
              no_deps: bool = False) -> InstallPlan:
    """Compile the fork (csrc/) with nvcc through ccache and install it editable, build time and hit stats shown."""
    env = {**build_env(arch, jobs), **_version_env(version)}
    provenance = {"mode": "full", "wheel": None, "commit": commit, "arch_list": arch, "series": series,
                  "version": version, "max_jobs": jobs.max_jobs, "nvcc_threads": jobs.nvcc_threads}
    before, after = _common_steps(version, provenance)
    pip = shlex.join([PYTHON, "-m", "pip", "install", "--no-build-isolation", *(["--no-deps"] if no_deps else []),
                      "-v", "-e", CONTAINER_FORK])
    script = (f"set -e; ccache --zero-stats >/dev/null; start=$(date +%s); {pip}; "
              f"echo \"build time: $(( $(date +%s) - start )) s\"; ccache --show-stats")
    steps = [*before, Step("compile and install the fork editable (full build)", ["bash", "-c", script], env,
                           CONTAINER_FORK), *after]
    return InstallPlan("full", steps, provenance, [f"TORCH_CUDA_ARCH_LIST={arch}",
                                                   f"MAX_JOBS={jobs.max_jobs} NVCC_THREADS={jobs.nvcc_threads}: "
                                                   f"{jobs.reason}"])


def cmake_presets(arch: str, jobs: Jobs, python: str = "/opt/workbench-venv/bin/python", nvcc: str = NVCC) -> dict:
    """A CMakeUserPresets.json equivalent to vLLM's tools/generate_cmake_presets.py, with our job count
    (its own uses cores only, no RAM bound) and ccache launchers; installs the .so files into the tree."""
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


_WRITE_FILE = "import sys; open(sys.argv[1], 'w').write(sys.argv[2])"

# Adds the rebuild to the install record (keeping mode, wheel, commit, series of the install it extends).
_RECORD_REBUILD = r"""
import json, os, sys, time
path, arch = sys.argv[1], sys.argv[2]
record = json.load(open(path)) if os.path.exists(path) else {"mode": "rebuild-only"}
record["rebuild"] = {"arch_list": arch, "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
os.makedirs(os.path.dirname(path), exist_ok=True)
with open(path + ".tmp", "w") as fh:
    json.dump(record, fh, indent=2)
os.replace(path + ".tmp", path)
print("provenance:", path)
"""


def rebuild_plan(arch: str, jobs: Jobs) -> InstallPlan:
    """Incremental csrc/ build: regenerate the CMake preset, configure, build and install the .so files."""
    env = {k: v for k, v in build_env(arch, jobs).items() if k.startswith("CCACHE") or k == "TORCH_CUDA_ARCH_LIST"}
    presets = json.dumps(cmake_presets(arch, jobs), indent=2)
    script = ("set -e; ccache --zero-stats >/dev/null; start=$(date +%s); cmake --preset release; "
              "cmake --build --preset release --target install; "
              "echo \"rebuild time: $(( $(date +%s) - start )) s\"; ccache --show-stats")
    steps = [
        Step("write CMakeUserPresets.json (git-ignored by vLLM)",
             [PYTHON, "-c", _WRITE_FILE, f"{CONTAINER_FORK}/CMakeUserPresets.json", presets]),
        Step("configure, build and install csrc/ incrementally", ["bash", "-c", script], env, CONTAINER_FORK),
        Step("verify vllm imports from the fork and vllm._C loads", [PYTHON, "-c", _VERIFY, CONTAINER_FORK]),
        Step("record the rebuild in the provenance", [PYTHON, "-c", _RECORD_REBUILD, PROVENANCE, arch]),
    ]
    provenance = {"mode": "rebuild", "arch_list": arch, "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    return InstallPlan("rebuild", steps, provenance, [f"TORCH_CUDA_ARCH_LIST={arch}",
                                                      f"jobs={jobs.max_jobs} NVCC_THREADS={jobs.nvcc_threads}: "
                                                      f"{jobs.reason}"])


def provenance_json(plan: InstallPlan) -> str:
    return json.dumps(asdict(plan)["provenance"], indent=2)
