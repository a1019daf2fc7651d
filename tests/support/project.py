"""A throwaway workbench project for the docker tier: the repo's real top-level files (compose file,
Dockerfile.dev, docker/, tasks.py) in a temp folder, a small git fork, and unique resource names,
so tests drive the real `invoke` CLI and engine without touching the user's container or images."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

import yaml

from workbench.config import Settings

ROOT = Path(__file__).resolve().parents[2]
TEST_UID = 4242  # not the host user (root on CI): proves files in mounts get the image user's ids
TEST_GID = 4242
CA_DIR = Path("/usr/local/share/ca-certificates")  # the host's extra CAs (TLS interception on CI)


def memlock_env() -> dict[str, str]:
    """Where the daemon may not raise RLIMIT_MEMLOCK (this sandbox: 8 MiB hard), ask for what it may give."""
    import resource

    hard = resource.getrlimit(resource.RLIMIT_MEMLOCK)[1]
    return {} if hard == resource.RLIM_INFINITY else {"WORKBENCH_ULIMIT_MEMLOCK": str(hard)}


def cache_root() -> Path:
    default = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "vllm-workbench"
    return Path(os.environ.get("WORKBENCH_CACHE") or default)


def test_base_image() -> str:
    image = os.environ.get("WORKBENCH_TEST_BASE_IMAGE")
    if image:
        return image
    out = subprocess.run(["bash", str(ROOT / "tests/ci/build_test_base.sh"), str(cache_root())],
                         check=True, capture_output=True, text=True)
    return out.stdout.strip().splitlines()[-1]


def extra_ca_dir() -> str:
    return str(CA_DIR) if CA_DIR.is_dir() and any(CA_DIR.glob("*.crt")) else ""


def git(path: Path, *args: str) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@e", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@e"}
    return subprocess.run(["git", "-C", str(path), *args], check=True, capture_output=True, text=True,
                          env=env).stdout.strip()


@dataclass
class Project:
    root: Path
    name: str  # unique prefix for the container, volume, images

    @property
    def settings(self) -> Settings:
        return Settings.from_mapping(self.root, yaml.safe_load((self.root / "invoke.yaml").read_text())["workbench"])

    def invoke(self, *args: str, env: dict | None = None, check: bool = False, timeout: int = 600):
        cmd = [sys.executable, "-m", "invoke", "--search-root", str(self.root), *args]
        pythonpath = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
        full_env = {**os.environ, "PYTHONPATH": pythonpath, **memlock_env(), **(env or {})}
        result = subprocess.run(cmd, capture_output=True, text=True, env=full_env,
                                timeout=timeout, cwd=self.root)
        if check and result.returncode != 0:
            raise AssertionError(f"invoke {' '.join(args)} -> {result.returncode}\n{result.stdout}\n{result.stderr}")
        return result

    def commit_fork(self, message: str) -> str:
        (self.root / "vllm" / "CHANGES.txt").open("a").write(message + "\n")
        git(self.root / "vllm", "add", "-A")
        git(self.root / "vllm", "commit", "-qm", message)
        return git(self.root / "vllm", "rev-parse", "HEAD")


def make_project(tmp: Path, image: str, tag: str) -> Project:
    name = f"wbtest-{uuid.uuid4().hex[:8]}"
    for item in ("docker-compose.yml", "Dockerfile.dev", "tasks.py"):
        shutil.copy2(ROOT / item, tmp / item)
    shutil.copytree(ROOT / "docker", tmp / "docker")
    shutil.copytree(ROOT / "workbench", tmp / "workbench", ignore=shutil.ignore_patterns("__pycache__"))
    for sub in ("custom_kernels", "patches", "scripts", "results"):
        (tmp / sub).mkdir()
    fork = tmp / "vllm"
    (fork / "vllm").mkdir(parents=True)
    (fork / "vllm" / "__init__.py").write_text("")
    (fork / "setup.py").write_text("# stand-in for the vLLM fork\n")
    git(fork, "init", "-q", "-b", "main")
    git(fork, "add", "-A")
    git(fork, "commit", "-qm", "fork")
    for path in (tmp / "results", tmp / "hf"):
        path.mkdir(exist_ok=True)
        os.chown(path, TEST_UID, TEST_GID)  # the host user, as far as the container is concerned
    config = {"workbench": {
        "image": image, "tag": tag, "container": name, "ccache_volume": f"{name}-ccache",
        "hf_cache": str(tmp / "hf"), "uid": TEST_UID, "gid": TEST_GID, "base_image": test_base_image(),
        "ca_certs": extra_ca_dir(), "gpus": "none",
    }}
    (tmp / "invoke.yaml").write_text(yaml.safe_dump(config))
    return Project(tmp, name)


def context_digest(settings: Settings) -> str:
    from workbench.container import images

    plan, files = images.plan_build(settings)
    h = hashlib.sha256(repr(sorted(plan.buildargs.items())).encode())
    for name, data in sorted(files.items()):
        h.update(name.encode() + data)
    return h.hexdigest()[:12]
