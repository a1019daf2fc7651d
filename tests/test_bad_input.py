"""Bad input, as a new user types it: each one must end in a single `error: what is wrong: what to do`
line, a non-zero exit, no traceback, and nothing changed - the project's files, the fork's git state,
and on the real daemon the project's container (its filesystem too), images and volumes.

One throwaway project for the module (the real tasks.py, compose file and Dockerfile; a stand-in fork
tagged v0.13.0), its dev container up and holding a file of its own, so a task that touched the container
before refusing would show in its diff.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from support.docker_fixtures import DEV_IMAGE
from support.project import Project, git, make_project

pytestmark = pytest.mark.docker


@dataclass(frozen=True)
class Case:
    args: tuple[str, ...]
    says: str  # in the error line: proves it is the right refusal
    env: dict[str, str] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)  # written into the project before the run
    not_says: str = ""  # must not be in the error line


NUMBERS = {
    # plan-memory: numbers given text or out of range
    "plan-total-gib-text": Case(("plan-memory", "--model", "TinyLlama-1.1B", "--total-gib", "abc"),
                                "--total-gib 'abc' is not a number: give a number, e.g. --total-gib 80"),
    "plan-max-model-len-text": Case(("plan-memory", "--model", "TinyLlama-1.1B", "--total-gib", "80",
                                     "--max-model-len", "abc"), "--max-model-len 'abc' is not a whole number"),
    "plan-gpu-util-text": Case(("plan-memory", "--model", "TinyLlama-1.1B", "--total-gib", "80", "--gpu-util", "abc"),
                               "--gpu-util 'abc' is not a number"),
    "plan-reserve-negative": Case(("plan-memory", "--model", "TinyLlama-1.1B", "--total-gib", "80",
                                   "--reserve-gib", "-3"), "--reserve-gib '-3' must be at least 0"),
    "plan-gpu-util-zero": Case(("plan-memory", "--model", "TinyLlama-1.1B", "--total-gib", "80", "--gpu-util", "0"),
                               "--gpu-util '0' must be greater than 0"),
    "plan-gpu-util-above-one": Case(("plan-memory", "--model", "TinyLlama-1.1B", "--total-gib", "80",
                                     "--gpu-util", "1.5"), "--gpu-util '1.5' must be at most 1"),
    "plan-max-model-len-zero": Case(("plan-memory", "--model", "TinyLlama-1.1B", "--total-gib", "80",
                                     "--max-model-len", "0"), "--max-model-len '0' must be at least 1"),
    "plan-tp-text": Case(("plan-memory", "--model", "TinyLlama-1.1B", "--total-gib", "80", "--tp", "abc"),
                         "--tp 'abc' is not a whole number"),
    "plan-tp-zero": Case(("plan-memory", "--model", "TinyLlama-1.1B", "--total-gib", "80", "--tp", "0"),
                         "--tp '0' must be at least 1"),
    "plan-tp-not-dividing": Case(("plan-memory", "--model", "TinyLlama-1.1B", "--total-gib", "80", "--tp", "3"),
                                 "--tp 3 must divide (or be a multiple of) the 4 KV heads of tinyllama-1.1b: use "
                                 "one of 1, 2, 4"),
    "plan-block-size-text": Case(("plan-memory", "--model", "TinyLlama-1.1B", "--total-gib", "80",
                                  "--block-size", "big"), "--block-size 'big' is not a whole number"),
    "plan-block-size-odd": Case(("plan-memory", "--model", "TinyLlama-1.1B", "--total-gib", "80",
                                 "--block-size", "24"), "--block-size 24 is no block size vLLM supports: use one of 1"),
    "plan-used-negative": Case(("plan-memory", "--model", "TinyLlama-1.1B", "--total-gib", "80", "--used-gib", "-1"),
                               "--used-gib '-1' must be at least 0"),
    "plan-used-without-total": Case(("plan-memory", "--model", "TinyLlama-1.1B", "--used-gib", "5"),
                                    "--used-gib goes with --total-gib"),
    "plan-used-above-total": Case(("plan-memory", "--model", "TinyLlama-1.1B", "--total-gib", "8", "--used-gib", "9"),
                                  "need 0 <= used < total"),
    "plan-total-infinite": Case(("plan-memory", "--model", "TinyLlama-1.1B", "--total-gib", "inf"),
                                "--total-gib 'inf' is not a finite number"),
    "plan-max-num-seqs-negative": Case(("plan-memory", "--model", "TinyLlama-1.1B", "--total-gib", "80",
                                        "--max-num-seqs", "-1"), "--max-num-seqs '-1' must be at least 1"),
    "plan-gpu-index-text": Case(("plan-memory", "--model", "TinyLlama-1.1B", "--gpu", "first"),
                                "--gpu 'first' is not a whole number"),
    "plan-sizing-unknown": Case(("plan-memory", "--model", "TinyLlama-1.1B", "--total-gib", "80", "--sizing", "fast"),
                                "--sizing 'fast' is unknown: use one of auto, vllm, builtin"),
    "plan-kv-dtype-unknown": Case(("plan-memory", "--model", "TinyLlama-1.1B", "--total-gib", "80",
                                   "--kv-cache-dtype", "fp4"), "--kv-cache-dtype 'fp4' is unknown: use one of auto"),
    "plan-model-unknown": Case(("plan-memory", "--model", "nope", "--total-gib", "80"),
                               "--model 'nope' is neither a shipped config nor a config.json: give one of"),
    "plan-model-not-a-config": Case(("plan-memory", "--model", "notes.json", "--total-gib", "80"),
                                    "has no model_type", files={"notes.json": "[1, 2]"}),
    # install / rebuild
    "install-jobs-text": Case(("install", "--full", "--arch", "9.0a", "--jobs", "abc"),
                              "--jobs 'abc' is not a whole number"),
    "install-jobs-zero": Case(("install", "--full", "--arch", "9.0a", "--jobs", "0"), "--jobs '0' must be at least 1"),
    "install-jobs-negative": Case(("install", "--full", "--arch", "9.0a", "--jobs", "-4"),
                                  "--jobs '-4' must be at least 1"),
    "install-arch-unknown": Case(("install", "--full", "--arch", "foo"), "--arch 'foo' is not a TORCH_CUDA_ARCH_LIST"),
    "install-jobs-without-full": Case(("install", "--jobs", "4"), "--jobs is for --full"),
    "install-wheel-empty-url": Case(("install", "--precompiled", "--wheel", "https://"),
                                    "--wheel 'https://' is not a wheel URL"),
    "install-wheel-ftp": Case(("install", "--precompiled", "--wheel", "ftp://host/vllm-0.13.0-x.whl"),
                              "is not a wheel URL"),
    "install-wheel-not-a-wheel": Case(("install", "--precompiled", "--wheel", "vllm.tar.gz"),
                                      "--wheel 'vllm.tar.gz' is not a wheel"),
    "install-wheel-missing-file": Case(("install", "--precompiled", "--wheel", "/nonexistent/vllm-0.13.0-x.whl"),
                                       "no wheel file at /nonexistent/vllm-0.13.0-x.whl"),
    "install-both-modes": Case(("install", "--precompiled", "--full"), "--precompiled and --full exclude each other"),
    "install-full-with-wheel": Case(("install", "--full", "--arch", "9.0a", "--wheel", "x.whl"),
                                    "--wheel is for --precompiled"),
    "rebuild-jobs-text": Case(("rebuild", "--arch", "9.0a", "--jobs", "many"), "--jobs 'many' is not a whole number"),
    "rebuild-arch-unknown": Case(("rebuild", "--arch", "9.0z"), "--arch '9.0z' is not a TORCH_CUDA_ARCH_LIST"),
    # tune / trace
    "tune-buckets-text": Case(("kernels.tune", "--buckets", "abc", "--dry-run"),
                              "--buckets 'abc': 'abc' is not a whole number"),
    "tune-buckets-zero": Case(("kernels.tune", "--buckets", "1,0,16", "--dry-run"), "--buckets '1,0,16': 0 is below 1"),
    "tune-tp-text": Case(("kernels.tune", "--tp", "two", "--dry-run"), "--tp 'two': 'two' is not a whole number"),
    "trace-max-tokens-text": Case(("trace.layers", "--max-tokens", "lots", "--dry-run"),
                                  "--max-tokens 'lots' is not a whole number"),
    "trace-top-zero": Case(("trace.layers", "--top", "0", "--dry-run"), "--top '0' must be at least 1"),
}

CONFIG = {
    # invoke.yaml that YAML cannot read: even --list, which reads it before any task
    "yaml-error-list": Case(("--list",), "invoke.yaml is not valid YAML at line 3",
                            files={"invoke.yaml": "workbench:\n  image: x\n tag: [oops\n"}),
    "yaml-error-status": Case(("status",), "invoke.yaml is not valid YAML",
                              files={"invoke.yaml": "workbench:\n\timage: tab\n"}),
    "yaml-workbench-not-mapping": Case(("--list",), "workbench is 5, not a mapping",
                                       files={"invoke.yaml": "workbench: 5\n"}),
    "yaml-not-mapping": Case(("status",), "holds a list, not a mapping", files={"invoke.yaml": "- a\n- b\n"}),
    # values of the wrong type, validated where Settings is built
    "config-fork-number": Case(("status",), "config workbench.fork is 5 (a number), not text",
                               files={"invoke.yaml": "workbench:\n  fork: 5\n"}),
    "config-uid-text": Case(("build", "--dry-run"), "config workbench.uid is 'abc', not a numeric id",
                            files={"invoke.yaml": "workbench:\n  uid: abc\n"}),
    "env-uid-text": Case(("build", "--dry-run"), "config workbench.uid is 'abc', not a numeric id",
                         env={"INVOKE_WORKBENCH_UID": "abc"}, files={"invoke.yaml": "workbench:\n  image: x\n"}),
    # invoke casts an environment variable to the type invoke.yaml gave the key, in its own code
    "env-uid-over-yaml-number": Case(("build", "--dry-run"), "INVOKE_WORKBENCH_UID='abc' cannot replace uid: 4242",
                                     env={"INVOKE_WORKBENCH_UID": "abc"}),
    "env-gid-negative": Case(("doctor",), "config workbench.gid is '-1', not a numeric id",
                             env={"INVOKE_WORKBENCH_GID": "-1"}),
    "config-gpus-list": Case(("up",), "config workbench.gpus is [0, 1] (list), not text",
                             files={"invoke.yaml": "workbench:\n  gpus: [0, 1]\n"}),
    "config-secrets-number": Case(("shell", "--cmd", "true"), "config workbench.secrets is [5]",
                                  files={"invoke.yaml": "workbench:\n  secrets: [5]\n"}),
    # the dev container's tasks
    "tag-without-image": Case(("up",), "not found: run `invoke build` first", env={"INVOKE_WORKBENCH_TAG": "nope"}),
    "up-gpus-text": Case(("up", "--gpus", "abc"), "--gpus 'abc' is not valid"),
    "shell-gpus-twice": Case(("shell", "--gpus", "0,0"), "names a GPU twice"),
    "build-ca-certs-missing": Case(("build", "--ca-certs", "nope"), "--ca-certs nope: no *.crt files there"),
    # the patch series: `invoke patch` is patch.apply
    "patch-series-a-path": Case(("patch.check", "--series", "../0.13.0"),
                                "--series '../0.13.0' is not a vLLM release number: give X.Y.Z"),
    "patch-refresh-series-text": Case(("patch.refresh", "--series", "latest", "--dry-run"),
                                      "--series 'latest' is not a vLLM release number"),
    "patch-unknown-series": Case(("patch", "--series", "9.9.9"), "no patch series for vLLM 9.9.9"),
    "custom-fork-missing": Case(("source",), "set workbench.fork", env={"INVOKE_WORKBENCH_FORK": "/nonexistent/vllm"},
                                not_says="submodule"),
    "custom-fork-missing-patch": Case(("patch.check",), "clone your vLLM fork there",
                                      env={"INVOKE_WORKBENCH_FORK": "/nonexistent/vllm"}, not_says="submodule"),
}
CASES = {**NUMBERS, **CONFIG}


@pytest.fixture(scope="module")
def battery(tmp_path_factory, docker_client, dev_tag):
    proj = make_project(tmp_path_factory.mktemp("battery"), DEV_IMAGE, dev_tag)
    git(proj.root / "vllm", "tag", "v0.13.0")
    # plan-memory needs the model configs and the rules that find and read them (workbench.models loads the
    # kernels package's models.py by its file).
    kernels = Path(__file__).resolve().parent.parent / "custom_kernels" / "src" / "custom_kernels"
    shutil.copytree(kernels / "configs", proj.root / "custom_kernels" / "src" / "custom_kernels" / "configs")
    shutil.copy2(kernels / "models.py", proj.root / "custom_kernels" / "src" / "custom_kernels" / "models.py")
    proj.invoke("up", check=True)
    proj.invoke("shell", "--cmd", "mkdir -p ~/mine && echo kept > ~/mine/work", check=True)
    yield proj
    for c in docker_client.containers.list(all=True, filters={"name": proj.name}):
        c.remove(force=True)
    for v in docker_client.volumes.list(filters={"name": proj.name}):
        v.remove(force=True)


def _files(root: Path) -> dict[str, str]:
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d not in (".git", "__pycache__")]
        for name in filenames:
            path = Path(dirpath) / name
            out[path.relative_to(root).as_posix()] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def state(proj: Project, client, tag: str) -> dict:
    """Everything a refused command must leave as it was (``tag``: the project's dev image tag, given
    because some cases break invoke.yaml, where the project keeps it)."""
    fork = proj.root / "vllm"
    containers = client.containers.list(all=True, filters={"name": proj.name})
    return {
        "files": _files(proj.root),
        "fork": (git(fork, "rev-parse", "HEAD"), git(fork, "status", "--porcelain", "--ignored"),
                 git(fork, "stash", "list"), git(fork, "tag")),
        "containers": sorted((c.name, c.id, c.status, c.image.id) for c in containers),
        "diff": sorted(str(d) for c in containers for d in (c.diff() or [])),
        "images": sorted(t for i in client.images.list(name=DEV_IMAGE) for t in i.tags
                         if t.endswith((proj.name, f":{tag}", f":{tag}-compiled"))),
        "volumes": sorted(v.name for v in client.volumes.list(filters={"name": proj.name})),
    }


def test_the_battery_is_big_enough():
    assert len(CASES) >= 40


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_is_one_error_line_and_changes_nothing(battery, docker_client, dev_tag, name):
    case = CASES[name]
    saved = {rel: (battery.root / rel).read_bytes() if (battery.root / rel).exists() else None for rel in case.files}
    try:
        for rel, text in case.files.items():
            (battery.root / rel).write_text(text)
        before = state(battery, docker_client, dev_tag)
        result = battery.invoke(*case.args, env={"COLUMNS": "200", **case.env}, timeout=300)
        after = state(battery, docker_client, dev_tag)
    finally:
        for rel, data in saved.items():
            if data is None:
                (battery.root / rel).unlink(missing_ok=True)
            else:
                (battery.root / rel).write_bytes(data)
    assert result.returncode != 0, (name, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr + result.stdout, (name, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), (name, result.stderr)
    assert ": " in lines[0][len("error: "):], (name, "what is wrong: what to do", lines[0])
    assert case.says in lines[0], (name, lines[0])
    assert not case.not_says or case.not_says not in lines[0], (name, lines[0])
    assert after == before, name


def test_plan_memory_help_shows_value_flags_taking_values():
    import subprocess
    import sys

    root = Path(__file__).resolve().parent.parent
    out = subprocess.run([sys.executable, "-m", "invoke", "-r", str(root), "plan-memory", "--help"],
                         capture_output=True, text=True, timeout=60).stdout
    for flag in ("total-gib", "used-gib", "reserve-gib", "gpu-util", "max-model-len", "tp", "block-size",
                 "activation-gib", "cudagraph-gib", "gpu", "max-num-seqs", "vllm-version", "sizing"):
        assert f"--{flag}=" in out, flag
    for flag in ("json", "serve", "enforce-eager"):
        assert f"--{flag}=" not in out and f"--{flag}" in out, flag
