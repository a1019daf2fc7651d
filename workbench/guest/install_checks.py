#!/usr/bin/env python3
"""The install steps that are Python, run by path with the interpreter vLLM is installed into (the dev
container's venv, or the host runtime's workbench.python). Standard library only.

    install_checks.py remove-non-editable          a regular (non-editable) vllm goes, its dependencies stay
    install_checks.py verify FORK                  vllm imports from FORK and its compiled extension loads
    install_checks.py record JSON PATH             write the install record (PATH, atomically)
    install_checks.py record-rebuild PATH ARCH     add an incremental rebuild to the record
    install_checks.py write-presets PATH JSON      CMakeUserPresets.json with this interpreter and nvcc
"""

from __future__ import annotations

import importlib.metadata as md
import json
import os
import shutil
import subprocess
import sys
import time


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _write_json(path: str, data: dict) -> None:
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path + ".tmp", "w") as fh:
        json.dump(data, fh, indent=2)
    os.replace(path + ".tmp", path)


def remove_non_editable() -> int:
    """So the editable fork is the vllm Python imports (the release image ships a regular one)."""
    try:
        dist = md.distribution("vllm")
    except md.PackageNotFoundError:
        return 0
    direct = json.loads(dist.read_text("direct_url.json") or "{}")
    if direct.get("dir_info", {}).get("editable"):
        print("vllm is already an editable install:", direct.get("url"))
        return 0
    where = str(dist.locate_file(""))
    print("removing the non-editable vllm", dist.version, "from", where)
    # A vllm outside this venv (the base image's system install) belongs to the base interpreter.
    inside = os.path.realpath(where).startswith(os.path.realpath(sys.prefix) + os.sep)
    python = sys.executable if inside else os.path.join(sys.base_prefix, "bin", "python3")
    env = {**os.environ, "PIP_BREAK_SYSTEM_PACKAGES": "1"}
    if subprocess.call([python, "-m", "pip", "uninstall", "-y", "vllm"], env=env) != 0:
        print(f"error: cannot remove the non-editable vllm in {where} (not writable?): rebuild the dev image "
              "(`invoke build`: Dockerfile.dev removes it) or remove it as its owner", file=sys.stderr)
        return 1
    return 0


def verify(fork: str) -> int:
    """vllm imports from the fork and vllm._C loads (an ABI mismatch is named as such)."""
    import vllm

    path = os.path.realpath(vllm.__file__)
    print(f"vllm {vllm.__version__} imported from {path}")
    if not path.startswith(os.path.realpath(fork).rstrip("/") + "/"):
        print(f"error: vllm imports from {path}, not the fork {fork}: another vllm shadows it; rerun "
              "`invoke install` (it removes non-editable copies)", file=sys.stderr)
        return 1
    try:
        import vllm._C
    except ImportError as err:
        msg = str(err)
        if "undefined symbol" in msg:
            print(f"error: vllm._C does not load ({msg.split(':')[-1].strip()} undefined): an ABI mismatch - the "
                  "compiled extension was built against another torch/CUDA than this environment's; use a wheel "
                  "built for this torch, or compile: `invoke install --full`", file=sys.stderr)
        else:
            print(f"error: vllm._C does not load ({msg}): reinstall (`invoke install`) or compile (`--full`)",
                  file=sys.stderr)
        return 1
    print("vllm._C loads")
    return 0


def record(data: str, path: str) -> int:
    entry = json.loads(data)
    entry["time"] = _now()
    entry["python"] = sys.executable
    _write_json(path, entry)
    print("install record:", path)
    return 0


def record_rebuild(path: str, arch: str) -> int:
    """Extend the record of the install the rebuild builds on (mode, wheel, commit, series kept)."""
    entry = {"mode": "rebuild-only"}
    if os.path.exists(path):
        with open(path) as fh:
            entry = json.load(fh)
    entry["rebuild"] = {"arch_list": arch, "time": _now()}
    _write_json(path, entry)
    print("install record:", path)
    return 0


def write_presets(path: str, presets: str) -> int:
    """The presets with this interpreter and the nvcc on PATH (else CUDA's default place) filled in."""
    nvcc = shutil.which("nvcc") or "/usr/local/cuda/bin/nvcc"
    text = presets.replace("@PYTHON@", sys.executable).replace("@NVCC@", nvcc)
    with open(path, "w") as fh:
        fh.write(text)
    print(f"wrote {path} (python {sys.executable}, nvcc {nvcc})")
    return 0


COMMANDS = {"remove-non-editable": (remove_non_editable, 0), "verify": (verify, 1), "record": (record, 2),
            "record-rebuild": (record_rebuild, 2), "write-presets": (write_presets, 2)}


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] not in COMMANDS or len(args) - 1 != COMMANDS[args[0]][1]:
        print(__doc__, file=sys.stderr)
        return 2
    return COMMANDS[args[0]][0](*args[1:])


if __name__ == "__main__":
    sys.exit(main())
