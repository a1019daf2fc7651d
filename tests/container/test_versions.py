"""Versions that must fit together: the base image follows the fork's release, the torch pin is read the
way vLLM's checkouts write it (the real 0.13.0 and 0.33.0 sources), and a build or install on an image
whose torch differs from the pin stops first, with the image to use (real daemon, real CLI)."""

from __future__ import annotations

import io
import tarfile
import uuid
from pathlib import Path

import pytest

from support.docker_fixtures import DEV_IMAGE
from support.project import git
from tests.support.vllm_source import NEWEST, PINNED, vllm_source_tree
from workbench.config import Settings
from workbench.container import images, labels, versions
from workbench.memory import kv_sizing

ROOT = Path(__file__).resolve().parents[2]


def _fork(path: Path, files: dict[str, str], tag: str | None = "v0.33.0") -> Path:
    (path / "vllm").mkdir(parents=True)
    (path / "vllm" / "__init__.py").write_text("")
    for name, text in files.items():
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_text(text)
    git(path, "init", "-q", "-b", "main")
    git(path, "add", "-A")
    git(path, "commit", "-qm", "fork")
    if tag:
        git(path, "tag", tag)
    return path


@pytest.mark.parametrize(("files", "expected"), [
    ({"requirements/cuda.txt": "-r common.txt\nnumba == 0.61.2 # note\ntorch==2.9.0\ntorchaudio==2.9.0\n"},
     ("==2.9.0", "requirements/cuda.txt")),
    # 0.33.0's layout: build requirements per device; markers for other platforms are not this one.
    ({"requirements/build/cuda.txt": "cmake>=3.26.1\ntorch==2.14.0\n",
      "requirements/build/cpu.txt": "torch==2.14.0+cpu; platform_machine == 'x86_64'\n"},
     ("==2.14.0", "requirements/build/cuda.txt")),
    ({"requirements/build.txt": "torch==2.10.0; platform_system == 'Darwin'\ntorch==2.11.0; "
                                "platform_system == 'Linux'\n"}, ("==2.11.0", "requirements/build.txt")),
    ({"pyproject.toml": '[build-system]\nrequires = ["cmake>=3.26.1", "torch == 2.13.0", "wheel"]\n'},
     ("==2.13.0", "pyproject.toml [build-system]")),
    ({"requirements/common.txt": "numpy\n"}, None),
])
def test_torch_pin_from_the_fork(tmp_path, files, expected):
    pin = versions.torch_pin(_fork(tmp_path / "fork", files))
    assert (pin.specifier, pin.source) == expected if expected else pin is None


def test_pin_allows_local_builds_of_the_same_version():
    pin = versions.TorchPin("==2.9.0", "requirements/cuda.txt")
    assert pin.allows("2.9.0") and pin.allows("2.9.0+cu129") and not pin.allows("2.9.1") and not pin.allows("junk")
    assert versions.compare_torch("img", "2.9.0+cu129", pin, "0.13.0").ok
    check = versions.compare_torch("vllm/vllm-openai:v0.13.0", "2.9.0+cu129",
                                   versions.TorchPin("==2.14.0", "requirements/cuda.txt"), "0.33.0")
    assert not check.ok and check.message == ("vllm/vllm-openai:v0.13.0 has torch 2.9.0+cu129 but the fork "
                                              "(vLLM 0.33.0) pins torch==2.14.0 (requirements/cuda.txt)")
    assert versions.compare_torch("img", None, pin, "0.13.0").ok  # unknown is not a mismatch
    assert versions.compare_torch("img", "2.1.0", None, "?").ok


def test_base_image_follows_the_fork_unless_configured(tmp_path):
    fork = _fork(tmp_path / "fork", {})
    assert versions.resolve_base_image("", fork) == ("vllm/vllm-openai:v0.33.0", "the fork's release, git tag v0.33.0")
    assert versions.resolve_base_image("mine:1", fork)[0] == "mine:1"
    image, why = versions.resolve_base_image("", tmp_path / "no-fork")
    assert image == "vllm/vllm-openai:v0.13.0" and "pinned release" in why
    settings = Settings.from_mapping(ROOT, {"fork": str(fork)})
    plan, _ = images.plan_build(settings)
    assert plan.buildargs["BASE_IMAGE"] == "vllm/vllm-openai:v0.33.0" and "git tag v0.33.0" in plan.base_reason
    assert plan.with_base_torch("2.14.0").buildargs["BASE_TORCH"] == "2.14.0"
    # The compose file's build section gets the same image.
    from workbench.container.compose import compose_variables

    assert compose_variables(settings)["WORKBENCH_BASE_IMAGE"] == "vllm/vllm-openai:v0.33.0"


def test_fix_names_the_release_image(tmp_path):
    fork = _fork(tmp_path / "fork", {})
    assert "invoke build --base-image vllm/vllm-openai:v0.33.0" in versions.torch_fix(fork, "other:1", "build")
    assert "moved past its release image" in versions.torch_fix(fork, "vllm/vllm-openai:v0.33.0", "build")
    assert "invoke up --recreate" in versions.torch_fix(fork, "", "install")


def test_sizing_rules_by_release():
    assert kv_sizing.rules_for("0.13.0") == (kv_sizing.RULES[0], "")
    rules, note = kv_sizing.rules_for("0.24.0")
    assert rules.release == "0.13.0" and "0.24.0 is sized by 0.13.0's rules" in note
    assert kv_sizing.rules_for("0.40.1")[0].release == "0.33.0"


@pytest.mark.vllm_source
@pytest.mark.parametrize(("release", "torch"), [(PINNED, "==2.9.0"), (NEWEST, "==2.14.0")])
def test_torch_pin_of_the_real_releases(release, torch):
    pin = versions.torch_pin(vllm_source_tree(release))
    assert pin.specifier == torch and pin.source == "requirements/cuda.txt"


# --------------------------------------------------------------------------------------- real daemon
def _image_with_torch(client, base: str, version: str, tag: str) -> str:
    """The test base plus a `torch` module reporting ``version`` (what `import torch` sees)."""
    dockerfile = (f"FROM {base}\nRUN mkdir -p /usr/lib/python3/dist-packages/torch && "
                  f"echo '__version__ = \"{version}\"' > /usr/lib/python3/dist-packages/torch/__init__.py\n")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("Dockerfile")
        info.size = len(dockerfile)
        tar.addfile(info, io.BytesIO(dockerfile.encode()))
    buf.seek(0)
    client.images.build(fileobj=buf, custom_context=True, tag=tag, rm=True, forcerm=True, pull=False)
    return tag


@pytest.mark.docker
def test_image_torch_reads_labels_and_probes(docker_client, project):
    base = project.settings.base_image
    assert versions.image_torch(docker_client, base) is None  # python3, no torch
    assert versions.image_torch(docker_client, "nosuch/image:1") is None
    ref = _image_with_torch(docker_client, base, "2.9.0+cu129", f"{DEV_IMAGE}:torch-{project.name}")
    assert versions.image_torch(docker_client, ref) == "2.9.0+cu129"
    labelled = docker_client.images.get(f"{DEV_IMAGE}:{project.settings.tag}")
    assert labelled.labels.get(labels.TORCH) == ""  # built on the test base: no torch recorded


@pytest.mark.docker
def test_build_and_install_stop_on_a_torch_mismatch(docker_client, project):
    """The fork pins torch 2.14.0; the base image has 2.9.0: build refuses with the image to use, and so
    does install on a dev image whose torch label says 2.9.0 - before anything changes."""
    fork = project.root / "vllm"
    (fork / "requirements").mkdir()
    (fork / "requirements" / "cuda.txt").write_text("torch==2.14.0\n")
    git(fork, "add", "-A")
    git(fork, "commit", "-qm", "pin torch")
    git(fork, "tag", "v0.33.0")
    base = _image_with_torch(docker_client, project.settings.base_image, "2.9.0+cu129",
                             f"{DEV_IMAGE}:torch-{project.name}")
    build = project.invoke("build", "--base-image", base, "--tag", f"never-{project.name}")
    assert build.returncode == 1 and "Traceback" not in build.stderr
    assert build.stderr.strip().splitlines() == [
        f"error: {base} has torch 2.9.0+cu129 but the fork (vLLM 0.33.0) pins torch==2.14.0 (requirements/cuda.txt): "
        "build on the fork's release image: invoke build --base-image vllm/vllm-openai:v0.33.0; or pass "
        "--allow-torch-mismatch to build anyway"]
    assert not docker_client.images.list(name=f"{DEV_IMAGE}:never-{project.name}")

    # A dev image recording torch 2.9.0 (the label invoke build writes), tagged for this project.
    tag = f"t29-{project.name}"
    dockerfile = f"FROM {DEV_IMAGE}:{project.settings.tag}\nLABEL {labels.TORCH}=2.9.0+cu129\n"
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("Dockerfile")
        info.size = len(dockerfile)
        tar.addfile(info, io.BytesIO(dockerfile.encode()))
    buf.seek(0)
    docker_client.images.build(fileobj=buf, custom_context=True, tag=f"{DEV_IMAGE}:{tag}", rm=True, pull=False)
    wheel = project.root / "wheels" / "vllm-0.33.0-cp38-abi3-manylinux1_x86_64.whl"
    wheel.parent.mkdir(exist_ok=True)
    wheel.write_bytes(b"not used: install stops before")
    install = project.invoke("install", "--precompiled", env={"INVOKE_WORKBENCH_TAG": tag})
    assert install.returncode == 1 and "Traceback" not in install.stderr
    assert install.stderr.strip().splitlines()[-1].startswith(
        f"error: {DEV_IMAGE}:{tag} has torch 2.9.0+cu129 but the fork (vLLM 0.33.0) pins torch==2.14.0")
    assert "invoke build, then invoke up --recreate" in install.stderr
    assert docker_client.containers.list(all=True, filters={"name": project.name}) == []  # nothing started
    docker_client.images.remove(f"{DEV_IMAGE}:{tag}", force=True)
    docker_client.images.remove(base, force=True)


@pytest.mark.docker
def test_failed_build_names_tls_anywhere_and_leaves_no_image(docker_client, project):
    """A step fails after pip printed a certificate error a few lines up, and after a step that committed
    a layer: the error gives the --ca-certs hint and the build's own layer images are gone."""
    marker = f"wbtest.build={uuid.uuid4().hex[:12]}"
    dockerfile = (f"FROM {project.settings.base_image}\nLABEL {marker}\nRUN echo one > /one\n"
                  "RUN echo 'Could not fetch URL https://pypi.org/simple/x/: There was a problem confirming the "
                  "ssl certificate: [SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed' && "
                  "echo 'ERROR: No matching distribution found for x' && false\n")
    plan = images.BuildPlan(f"{DEV_IMAGE}:tls-{project.name}", project.settings.base_image, {}, ("Dockerfile.dev",),
                            no_cache=True)
    lines = []
    with pytest.raises(images.BuildFailed) as failed:
        images.build(docker_client, plan, {"Dockerfile.dev": dockerfile.encode()}, on_line=lines.append)
    assert "with a TLS error" in str(failed.value) and "--ca-certs DIR" in str(failed.value)
    assert "CERTIFICATE_VERIFY_FAILED" in str(failed.value)
    assert any(line.startswith(" ---> ") and "Removing" not in line for line in lines)  # layers were made
    key, value = marker.split("=")
    assert docker_client.images.list(all=True, filters={"label": f"{key}={value}"}) == []
    assert docker_client.containers.list(all=True, filters={"label": f"{key}={value}"}) == []


def test_build_failure_without_tls_keeps_the_plain_message():
    plan = images.BuildPlan("img:dev", "base:1", {}, (), False)
    msg = images._explain_build_error("The command '/bin/sh -c false' returned a non-zero code: 1", plan,
                                      "step 3/9 (RUN false)", ["Step 3/9 : RUN false", "some output"])
    assert msg.startswith("build failed at step 3/9 (RUN false): The command") and "--ca-certs" not in msg
    tls = images._explain_build_error("The command '/bin/sh -c apt-get update' returned a non-zero code: 100", plan,
                                      "step 4/9 (RUN apt-get update)",
                                      ["Err:1 https://deb.example Certificate verification failed: The certificate "
                                       "is NOT trusted.", "E: Some index files failed to download."])
    assert "TLS error (...Err:1 https://deb.example Certificate verification failed" in tls and "--ca-certs" in tls
