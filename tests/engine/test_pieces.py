"""benchmarks/engine/pieces.sh: the GPU host's vLLM split so that every staging call fits 64 MiB beside the tree."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "engine" / "pieces.sh"
LIMIT = 64 << 20


def _checkout(tmp_path: Path, tree_bytes: int) -> tuple[Path, Path]:
    """A git checkout holding ``tree_bytes`` of tracked files, and a device-vllm folder with its device.sh."""
    repo = tmp_path / "repo"
    repo.mkdir()
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    (repo / "results.bin").write_bytes(os.urandom(tree_bytes))
    subprocess.run(["git", "-C", str(repo), "add", "results.bin"], check=True)
    shared = tmp_path / "shared" / "device-vllm"
    shared.mkdir(parents=True)
    (shared / "device.sh").write_text("#!/usr/bin/env bash\n")
    return repo, shared


def _run(repo: Path, shared: Path, archive: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "DEVICE_VLLM_SHARED": str(shared)}
    return subprocess.run(["bash", str(SCRIPT), str(archive)], cwd=repo, env=env, capture_output=True, text=True)


def test_every_piece_fits_one_call_beside_the_tree_and_they_join_to_the_archive(tmp_path):
    repo, shared = _checkout(tmp_path, 20 << 20)
    archive = tmp_path / "site.tar.xz"
    archive.write_bytes(os.urandom(130 << 20))  # about the size of vLLM 0.24.0's slim site
    done = _run(repo, shared, archive)
    assert done.returncode == 0, done.stderr
    pieces = sorted((repo / ".device-vllm").glob("c*/site.tar.xz.part-*"))
    assert len(pieces) == 4 and f"{len(pieces)} pieces" in done.stdout  # 130 MiB in 43 MiB of room: 4 calls
    assert all(p.stat().st_size + (20 << 20) < LIMIT for p in pieces)
    assert all((p.parent / "device.sh").is_file() for p in pieces)
    assert b"".join(p.read_bytes() for p in pieces) == archive.read_bytes()
    status = subprocess.run(["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=all"],
                            capture_output=True, text=True, check=True)
    assert status.stdout == "A  results.bin\n"  # the pieces are ignored: never committed, sent only through carry


def test_a_missing_archive_or_a_tree_too_big_says_what_to_do(tmp_path):
    repo, shared = _checkout(tmp_path, 60 << 20)
    done = _run(repo, shared, tmp_path / "nosuch.tar.xz")
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "build.sh" in done.stderr
    archive = tmp_path / "site.tar.xz"
    archive.write_bytes(b"x" * 1024)
    done = _run(repo, shared, archive)
    assert done.returncode == 2 and "too little room" in done.stderr and done.stderr.count("\n") == 1
    assert not (repo / ".device-vllm").exists()  # nothing half-done
