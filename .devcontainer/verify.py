"""Check the dev container after "Reopen in Container" and print ✅/❌ per item with the fix.

Three outcomes per check (docs/workflow.md):
  ok      ✅  works.
  pending ❌  not set up *yet* - the normal state of a fresh container (vllm not installed from the fork
              yet, custom_kernels not installed yet). Prints the fix; never fails the run.
  broken  ❌  something that should work does not (torch missing, a fork that does not import, an
              editable vllm pointing somewhere else). Exit status 1, unless --no-fail.
  info    ➖  facts that are fine either way: no GPU visible on a GPU-less host is not an error.
Runs with the container's Python (no dependency beyond the standard library); --json for tests.
"""

from __future__ import annotations

import argparse
import importlib.metadata as md
import json
import os
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

FORK = Path(os.environ.get("WORKBENCH_FORK_DIR", "/workspace/vllm"))
KERNELS = Path(os.environ.get("WORKBENCH_KERNELS_DIR", "/workspace/custom_kernels"))
ICONS = {"ok": "✅", "pending": "❌", "broken": "❌", "info": "➖"}


@dataclass
class Check:
    name: str
    status: str  # ok | pending | broken | info
    detail: str
    fix: str = ""


def _probe(code: str) -> tuple[int, str]:
    """Run an import probe in a fresh interpreter (a crashing import must not take this script down)."""
    # cwd "/": from /workspace/vllm, `python -c "import vllm"` would import the uninstalled source tree.
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd="/")
    lines = (proc.stdout.strip() or proc.stderr.strip()).splitlines()
    return proc.returncode, lines[-1] if lines else ""


def check_python() -> Check:
    venv = os.environ.get("VIRTUAL_ENV", "")
    in_venv = sys.prefix != sys.base_prefix
    writable = os.access(sys.prefix, os.W_OK)
    detail = f"{sys.executable} (Python {sys.version.split()[0]}), venv {'yes' if in_venv else 'no'} {venv}".rstrip()
    if in_venv and writable:
        return Check("python", "ok", detail + ", writable")
    return Check("python", "broken", detail + (", not writable" if in_venv else ""),
                 "rebuild the image (invoke build): the venv /opt/workbench-venv must be first on PATH and yours")


_TORCH_PROBE = (
    "import torch; n = torch.cuda.device_count(); "
    "print(torch.__version__, torch.version.cuda or 'cpu', n, "
    "'; '.join(torch.cuda.get_device_name(i) for i in range(n)))"
)


def check_torch_and_cuda() -> list[Check]:
    """One interpreter imports torch for both checks (an import costs seconds)."""
    rc, out = _probe(_TORCH_PROBE)
    if rc != 0:
        torch = Check("torch", "broken", f"import torch (or its CUDA query) failed: {out}",
                      "the base image provides torch: rebuild on vllm/vllm-openai (invoke build)")
        return [torch, _cuda_without_torch()]
    version, cuda, n, *names = out.split(" ", 3)
    torch = Check("torch", "ok", f"torch {version} (CUDA {cuda})")
    if n != "0":
        return [torch, Check("cuda", "ok", f"{n} GPU(s) visible: {' '.join(names)}")]
    return [torch, _cuda_without_torch(torch_sees_none=True)]


def _cuda_without_torch(torch_sees_none: bool = False) -> Check:
    devices = sorted(str(p) for p in Path("/dev").glob("nvidia[0-9]*"))
    if devices and torch_sees_none:
        return Check("cuda", "broken", f"{len(devices)} NVIDIA device node(s) but torch sees no GPU",
                     "driver/runtime mismatch: run `invoke doctor` on the host")
    if devices:
        return Check("cuda", "info", f"{len(devices)} NVIDIA device node(s); torch is needed to use them")
    return Check("cuda", "info", "no GPU visible (fine on a GPU-less host: CPU-only work, Triton interpreter)",
                 "for GPUs: a host with the NVIDIA container toolkit and .devcontainer/devcontainer.json")


def _vllm_origin() -> tuple[str, str]:
    """(kind, where) of the installed vllm distribution: editable/regular/none."""
    try:
        dist = md.distribution("vllm")
    except md.PackageNotFoundError:
        return "none", ""
    direct = dist.read_text("direct_url.json")
    if direct:
        info = json.loads(direct)
        if info.get("dir_info", {}).get("editable"):
            return "editable", info.get("url", "").removeprefix("file://")
    return "regular", str(dist.locate_file(""))


def check_vllm() -> Check:
    if not (FORK / "setup.py").is_file() and not (FORK / "pyproject.toml").is_file():
        return Check("vllm", "broken", f"{FORK} holds no vLLM source",
                     "on the host: git submodule update --init vllm (or set workbench.fork), then reopen")
    kind, where = _vllm_origin()
    if kind == "none":
        return Check("vllm", "pending", f"not installed yet (source at {FORK})", "invoke install --precompiled")
    if kind == "regular":
        return Check("vllm", "pending", f"a regular (non-editable) vllm is installed at {where}, not the fork",
                     "invoke install --precompiled")
    if Path(where).resolve() != FORK.resolve():
        return Check("vllm", "broken", f"editable vllm points at {where}, not {FORK}", "invoke install --precompiled")
    rc, out = _probe("import vllm, os; print(os.path.dirname(vllm.__file__))")
    if rc != 0:
        return Check("vllm", "broken", f"editable from {FORK} but import fails: {out}",
                     "invoke install --precompiled (a stale build: invoke install --full)")
    return Check("vllm", "ok", f"editable from {FORK} ({out})")


def check_custom_kernels(torch_ok: bool) -> Check:
    rc, out = _probe("import custom_kernels, os; print(os.path.dirname(custom_kernels.__file__))")
    if rc == 0:
        return Check("custom_kernels", "ok", f"importable from {out}")
    if "No module named 'custom_kernels'" not in out:
        status = "broken" if torch_ok else "pending"
        return Check("custom_kernels", status, f"import fails: {out}",
                     "fix the error above in custom_kernels/" if torch_ok else "needs torch first (see above)")
    if (KERNELS / "pyproject.toml").is_file():
        return Check("custom_kernels", "pending", f"source mounted at {KERNELS}, not installed yet",
                     f"pip install -e {KERNELS} (invoke install does it too)")
    return Check("custom_kernels", "broken", f"{KERNELS} is not mounted", "reopen the container from the workbench")


CHECKS = ("python", "torch", "cuda", "vllm", "custom_kernels")


def run_checks(only: set[str] | None = None) -> list[Check]:
    """The checks in order; ``only`` limits them to some names (tests, quick re-checks)."""
    wanted = only or set(CHECKS)
    checks = [check_python()] if "python" in wanted else []
    torch_ok = True
    if wanted & {"torch", "cuda"}:
        pair = check_torch_and_cuda()
        torch_ok = pair[0].status == "ok"
        checks += [c for c in pair if c.name in wanted]
    if "vllm" in wanted:
        checks.append(check_vllm())
    if "custom_kernels" in wanted:
        checks.append(check_custom_kernels(torch_ok))
    return checks


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print the checks as JSON")
    parser.add_argument("--no-fail", action="store_true", help="exit 0 even when something is broken")
    parser.add_argument("--only", default="", help=f"comma-separated subset of: {', '.join(CHECKS)}")
    args = parser.parse_args(argv)
    only = {name.strip() for name in args.only.split(",") if name.strip()}
    if only - set(CHECKS):
        parser.error(f"--only {args.only}: unknown check(s) {sorted(only - set(CHECKS))}; valid: {', '.join(CHECKS)}")
    checks = run_checks(only)
    if args.json:
        print(json.dumps([asdict(c) for c in checks], indent=2))
    else:
        print("workbench dev container:")
        for c in checks:
            label = {"pending": " (not set up yet)", "broken": " (broken)"}.get(c.status, "")
            print(f"  {ICONS[c.status]} {c.name}{label}: {c.detail}")
            if c.fix and c.status in ("pending", "broken"):
                print(f"       fix: {c.fix}")
        counts = {s: sum(c.status == s for c in checks) for s in ("ok", "pending", "broken")}
        print(f"  {counts['ok']} ok, {counts['pending']} not set up yet, {counts['broken']} broken")
    broken = any(c.status == "broken" for c in checks)
    return 1 if broken and not args.no_fail else 0


if __name__ == "__main__":
    sys.exit(main())
