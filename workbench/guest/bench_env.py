#!/usr/bin/env python3
"""Record the environment of a benchmark session as JSON (runs where the runtime runs steps).

What a number depends on: GPU and clocks, driver, CUDA, torch, the vLLM that is *imported* (its
version, file location, fork commit and whether the tree is dirty), which patches of the series are
applied, the custom_kernels version, its vLLM plugin entry point and dispatch table. Every probe is
best-effort: a missing piece is recorded as an error string, never a crash.

The one environment capture: the decode proxy (workbench.bench.proxy) and the trace files
(workbench.trace.records) record theirs with these functions (``workbench.guest.bench_env``), so a field
means the same everywhere; the kernels package, which imports nothing of the workbench, uses the same names
(custom_kernels/src/custom_kernels/tune.py ``environment``).

Usage: python3 bench_env.py --fork DIR --patches DIR [--install-record FILE] [--out FILE]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ENV_PREFIXES = ("VLLM_", "CUDA_", "TORCH_", "NCCL_", "CUSTOM_KERNELS_")


def basics() -> dict:
    """When and where: UTC time, host name, Python version, operating system."""
    return {"time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "host": platform.node(),
            "python": sys.version.split()[0], "platform": platform.platform()}


def env_vars() -> dict:
    """The environment variables that change what vLLM, CUDA, torch and custom_kernels do (no secrets)."""
    return {k: v for k, v in sorted(os.environ.items())
            if k.startswith(ENV_PREFIXES) and "TOKEN" not in k and "KEY" not in k}


def package_versions(names: tuple[str, ...]) -> dict:
    """The installed distribution's version of each name, None where it is not installed."""
    from importlib import metadata

    versions: dict = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def _run(cmd: list[str], cwd: str | None = None) -> tuple[int, str]:
    try:
        done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=60)
        return done.returncode, (done.stdout or done.stderr).strip()
    except (OSError, subprocess.TimeoutExpired) as err:
        return 127, str(err)


def gpus() -> list[dict] | str:
    """GPU name, driver, memory, clocks, load, power and the processes on it, through NVML (nvidia-ml-py,
    a vLLM dependency, so it is wherever vLLM runs)."""
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception as err:
        return f"NVML unavailable ({type(err).__name__}: {err})"
    rows: list[dict] = []
    driver = pynvml.nvmlSystemGetDriverVersion()
    for i in range(pynvml.nvmlDeviceGetCount()):
        h = pynvml.nvmlDeviceGetHandleByIndex(i)
        row: dict = {"index": i, "name": pynvml.nvmlDeviceGetName(h), "driver_version": driver}
        probes = {
            "memory_total_mib": lambda h: pynvml.nvmlDeviceGetMemoryInfo(h).total // 2**20,
            "memory_used_mib": lambda h: pynvml.nvmlDeviceGetMemoryInfo(h).used // 2**20,
            "utilization_gpu_pct": lambda h: pynvml.nvmlDeviceGetUtilizationRates(h).gpu,
            "clock_sm_mhz": lambda h: pynvml.nvmlDeviceGetClockInfo(h, pynvml.NVML_CLOCK_SM),
            "clock_sm_max_mhz": lambda h: pynvml.nvmlDeviceGetMaxClockInfo(h, pynvml.NVML_CLOCK_SM),
            "clock_mem_mhz": lambda h: pynvml.nvmlDeviceGetClockInfo(h, pynvml.NVML_CLOCK_MEM),
            "temperature_c": lambda h: pynvml.nvmlDeviceGetTemperature(h, pynvml.NVML_TEMPERATURE_GPU),
            "power_w": lambda h: pynvml.nvmlDeviceGetPowerUsage(h) / 1000.0,
            "power_limit_w": lambda h: pynvml.nvmlDeviceGetEnforcedPowerLimit(h) / 1000.0,
            "pstate": lambda h: pynvml.nvmlDeviceGetPerformanceState(h),
            "compute_processes": lambda h: [(p.pid, (p.usedGpuMemory or 0) // 2**20)
                                          for p in pynvml.nvmlDeviceGetComputeRunningProcesses(h)],
        }
        for key, probe in probes.items():
            try:
                row[key] = probe(h)
            except Exception as err:
                row[key] = f"unavailable ({type(err).__name__})"
        rows.append(row)
    return rows


def torch_info(device: int = 0) -> dict:
    """torch and its CUDA, the name and compute capability of CUDA device ``device``, and triton."""
    try:
        import torch
    except Exception as err:
        return {"error": f"torch: {type(err).__name__}: {err}"}
    info = {"version": torch.__version__, "cuda": torch.version.cuda, "cuda_available": torch.cuda.is_available()}
    if torch.cuda.is_available():
        info["device"] = torch.cuda.get_device_name(device)
        info["capability"] = ".".join(map(str, torch.cuda.get_device_capability(device)))
    try:
        import triton

        info["triton"] = triton.__version__
    except Exception:
        info["triton"] = None
    return info


def git_state(path: str) -> dict:
    """Commit, describe and dirty state of a checkout. safe.directory: the mount may be owned by another
    uid than the container user (git then refuses with "dubious ownership"); we only read."""
    if not Path(path, ".git").exists():
        return {"path": path, "error": "not a git checkout"}
    git = ["git", "-c", f"safe.directory={path}", "-C", path]
    rc, commit = _run([*git, "rev-parse", "HEAD"])
    if rc != 0:
        return {"path": path, "error": commit.splitlines()[0] if commit else f"git exited {rc}"}
    _, describe = _run([*git, "describe", "--tags", "--always", "--dirty"])
    _, status = _run([*git, "status", "--porcelain", "--untracked-files=no"])
    return {"path": path, "commit": commit, "describe": describe, "dirty": bool(status.strip()),
            "changed_files": status.splitlines()[:50]}


def vllm_info(fork: str | None = None) -> dict:
    """The vLLM distribution installed, where ``import vllm`` resolves, and - given the fork - its git state
    and whether that import is the fork."""
    info: dict = {"fork": git_state(fork)} if fork else {}
    try:
        from importlib import metadata

        info["dist_version"] = metadata.version("vllm")
    except Exception as err:
        info["dist_version"] = f"not installed ({type(err).__name__})"
    # Where `import vllm` resolves (without importing it: that takes seconds and loads plugins).
    try:
        import importlib.util

        spec = importlib.util.find_spec("vllm")
        info["import_path"] = str(Path(spec.origin).parent) if spec and spec.origin else None
        if fork:
            info["imports_fork"] = bool(info["import_path"]) and str(info["import_path"]).startswith(
                str(Path(fork).resolve()))
    except Exception as err:
        info["import_path"] = f"error: {err}"
    return info


def bench_flags() -> dict | str:
    """The option strings `vllm bench latency|throughput` accept in the installed vLLM, built with vLLM's own
    add_cli_args: the plan uses the flags this release has (the random dataset's length flags came later)."""
    try:
        from vllm.benchmarks import latency, throughput
        from vllm.utils.argparse_utils import FlexibleArgumentParser
    except Exception as err:
        return f"unavailable ({type(err).__name__}: {err})"
    flags = {}
    for name, module in (("latency", latency), ("throughput", throughput)):
        parser = FlexibleArgumentParser(prog=f"vllm bench {name}")
        try:
            module.add_cli_args(parser)
        except Exception as err:
            return f"{name}: add_cli_args failed ({type(err).__name__}: {err})"
        flags[name] = sorted(s for action in parser._actions for s in action.option_strings)
    return flags


def series_state(fork: str, patches: str, version: str | None) -> dict:
    """Which patches of patches/<version>/series are applied to the fork's working tree."""
    root = Path(patches)
    candidates = [root / version] if version else []
    candidates += sorted(p for p in root.glob("*") if (p / "series").is_file()) if root.is_dir() else []
    series_dir = next((c for c in candidates if (c / "series").is_file()), None)
    if series_dir is None:
        return {"error": f"no series file under {patches}"}
    state = {}
    for line in (series_dir / "series").read_text().splitlines():
        name = line.split("#", 1)[0].strip()
        if not name:
            continue
        patch = series_dir / name
        rc, _ = _run(["git", "-c", f"safe.directory={fork}", "-C", fork, "apply", "--reverse", "--check", str(patch)])
        if rc == 0:
            state[name] = "applied"
        else:
            rc2, _ = _run(["git", "-c", f"safe.directory={fork}", "-C", fork, "apply", "--check", str(patch)])
            state[name] = "not applied" if rc2 == 0 else "conflicts"
    return {"series": str(series_dir), "patches": state}


def custom_kernels_info() -> dict:
    info: dict = {}
    try:
        from importlib import metadata

        info["dist_version"] = metadata.version("custom-kernels")
        plugins = metadata.entry_points(group="vllm.general_plugins")
        info["vllm_plugins"] = sorted(f"{ep.name}={ep.value}" for ep in plugins)
    except Exception as err:
        info["dist_version"] = f"not installed ({type(err).__name__})"
    try:
        import custom_kernels

        info["version"] = getattr(custom_kernels, "__version__", None)
        info["path"] = str(Path(custom_kernels.__file__).parent)
    except Exception as err:
        info["error"] = f"import custom_kernels: {type(err).__name__}: {err}"
        return info
    try:
        import torch

        from custom_kernels import dispatch

        # One table file per GPU: the one this GPU dispatches with (or CUSTOM_KERNELS_TABLE's).
        gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
        if gpu is None and not os.environ.get("CUSTOM_KERNELS_TABLE"):
            info["dispatch_table"] = "no GPU: the op runs cuBLAS (F.linear) everywhere"
            return info
        path = Path(dispatch.table_path(gpu))
        info["dispatch_table"] = str(path)
        if path.is_file():
            raw = path.read_bytes()
            info["dispatch_table_sha256"] = hashlib.sha256(raw).hexdigest()
            table = json.loads(raw)
            info["dispatch_table_gpus"] = sorted((table.get("gpus") or {}).keys())
            info["dispatch_table_content"] = table if len(raw) < 200_000 else "too large, see sha256"
    except Exception as err:
        info["dispatch_table"] = f"unavailable ({type(err).__name__}: {err})"
    return info


def collect(fork: str, patches: str, install_record: str) -> dict:
    vllm = vllm_info(fork)
    version = vllm.get("dist_version") if isinstance(vllm.get("dist_version"), str) else None
    base_version = version.split("+")[0].split(".dev")[0] if version and not version.startswith("not") else None
    return {
        **basics(),
        "gpus": gpus(),
        "torch": torch_info(),
        "vllm": vllm,
        "series": series_state(fork, patches, base_version),
        "vllm_bench_flags": bench_flags(),
        "custom_kernels": custom_kernels_info(),
        "install": json.loads(Path(install_record).read_text()) if install_record and Path(install_record).is_file()
        else None,
        "env": env_vars(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", help="write the JSON here (default: stdout)")
    parser.add_argument("--fork", required=True, help="the vLLM fork checkout")
    parser.add_argument("--patches", required=True, help="the patch series root")
    parser.add_argument("--install-record", default="", help="the install record `invoke install` wrote")
    args = parser.parse_args(argv)
    data = collect(args.fork, args.patches, args.install_record)
    text = json.dumps(data, indent=1, default=str)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text)
        print(f"environment written to {args.out}")
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
