"""The real vLLM release source for the `vllm_source` tier: the sdist fetched once with pip and
cached outside the repo ($WORKBENCH_CACHE/vllm-sdist/<version>/), then extracted once.

Use ``vllm_source_tree("0.13.0")`` for a read-only tree and ``make_fork_repo(version, dest)`` for a
throwaway git repo (one commit, tagged v<version>) that stands in for the user's fork.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

from workbench.filelock import exclusive

PINNED = "0.13.0"
NEWEST = "0.33.0"


def cache_dir() -> Path:
    default = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "vllm-workbench"
    base = os.environ.get("WORKBENCH_CACHE") or default
    path = Path(base) / "vllm-sdist"
    path.mkdir(parents=True, exist_ok=True)
    return path


def sdist_path(version: str) -> Path:
    """The release sdist tarball, downloaded with pip on first use."""
    target = cache_dir() / version
    with exclusive(cache_dir() / f".{version}.lock"):
        found = sorted(target.glob("vllm-*.tar.gz"))
        if found:
            return found[0]
        target.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
               "--no-build-isolation", f"vllm=={version}", "-d", str(target)]
        # Newer setup.py files append the build's device to the version ("0.33.0+cpu" with CPU torch),
        # which pip rejects as inconsistent with the file name; pin the version vLLM reports.
        # VLLM_TARGET_DEVICE=empty: with a CPU torch, newer releases declare a direct-URL dependency
        # (triton-cpu) that pip >= 25 refuses in an sdist's metadata; the empty target declares none.
        env = {**os.environ, "VLLM_VERSION_OVERRIDE": version, "VLLM_TARGET_DEVICE": "empty"}
        result = subprocess.run(cmd, capture_output=True, text=True, env=env)
        found = sorted(target.glob("vllm-*.tar.gz"))
        if result.returncode != 0 or not found:
            raise RuntimeError(f"pip download of vllm=={version} failed:\n{result.stderr[-2000:]}")
        return found[0]


def vllm_source_tree(version: str = PINNED) -> Path:
    """The extracted sdist (the directory holding setup.py, vllm/, csrc/). Treat as read-only."""
    tree = cache_dir() / version / "tree"
    with exclusive(cache_dir() / f".{version}.tree.lock"):
        if not (tree / "setup.py").exists():
            archive = sdist_path(version)
            staging = cache_dir() / version / "staging"
            shutil.rmtree(staging, ignore_errors=True)
            with tarfile.open(archive) as tf:
                tf.extractall(staging, filter="data")
            (inner,) = list(staging.iterdir())
            shutil.rmtree(tree, ignore_errors=True)
            inner.rename(tree)
            shutil.rmtree(staging, ignore_errors=True)
    return tree


def release_deps(version: str) -> Path | None:
    """Extra packages a release's source needs on CPU that conflict with the shared test venv, installed
    once (--no-deps, pinned in tests/support/vllm-<version>-cpu-extra.txt) into
    $WORKBENCH_CACHE/vllm-deps/<version>; put it on PYTHONPATH of that release's child processes only
    (0.24.0 and 0.33.0 need transformers 5; 0.13.0 uses the venv's 4.x). None when the venv has all."""
    pins = Path(__file__).resolve().parent / f"vllm-{version}-cpu-extra.txt"
    if not pins.is_file():
        return None
    target = cache_dir().parent / "vllm-deps" / version
    stamp = target / ".complete"
    with exclusive(cache_dir() / f".{version}.deps.lock"):
        if not stamp.exists() or stamp.read_text() != pins.read_text():
            shutil.rmtree(target, ignore_errors=True)
            cmd = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), "-r", str(pins)]
            result = subprocess.run(cmd, capture_output=True, text=True)
            if result.returncode != 0:
                raise RuntimeError(f"installing vLLM {version}'s CPU extras failed:\n{result.stderr[-2000:]}")
            stamp.write_text(pins.read_text())
    return target


def make_fork_repo(version: str, dest: Path) -> Path:
    """A git repo with the release source as one commit tagged v<version> (a stand-in for a fork)."""
    shutil.copytree(vllm_source_tree(version), dest, symlinks=True)
    env = {**os.environ, "GIT_AUTHOR_NAME": "test", "GIT_AUTHOR_EMAIL": "test@example.com",
           "GIT_COMMITTER_NAME": "test", "GIT_COMMITTER_EMAIL": "test@example.com"}
    for args in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-q", "-m", f"vLLM {version}"],
                 ["tag", f"v{version}"]):
        subprocess.run(["git", *args], cwd=dest, check=True, env=env, capture_output=True)
    return dest
