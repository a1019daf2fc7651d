"""invoke build through BuildKit (the docker CLI) with cache mounts for apt's and pip's downloads, and the
classic builder's copy of the Dockerfile without them."""

from __future__ import annotations

import re
import time
import uuid
from pathlib import Path

import pytest

from workbench.container import buildkit, images, labels
from workbench.errors import WorkbenchError

ROOT = Path(__file__).resolve().parents[2]
# apt's download of a package: "Get:3 <mirror>/debian bookworm/main amd64 gdb amd64 13.1-3 [3,919 kB]"
APT_PACKAGE_DOWNLOAD = re.compile(r"Get:\d+ \S+ \S+/\S+ \S+ \S+ \S+ \S+ \[")


def _instructions(text: str) -> list[str]:
    joined = re.sub(r"\\\n", " ", text)
    return [line.split()[0] for line in joined.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def test_the_dockerfile_parses_anywhere_and_buildkit_gets_its_cache_mounts():
    text = (ROOT / "Dockerfile.dev").read_text()
    # Compose v1 and the devcontainer CLI build the file as it is, with the classic builder too: no --mount
    assert "--mount" not in " ".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    ours = buildkit.buildkit_dockerfile(text)
    assert _instructions(ours) == _instructions(text)
    runs = [" ".join(line.split()) for line in re.sub(r"\\\n\s*", " ", ours).splitlines()
            if line.startswith("RUN ")]
    apt = next(r for r in runs if "install-dev-packages.sh" in r)
    pip = next(r for r in runs if "install-dev-tools.sh" in r)
    assert apt.startswith("RUN --mount=type=cache,target=/var/cache/apt,sharing=locked "
                          "--mount=type=cache,target=/var/lib/apt/lists,sharing=locked sh ")
    assert pip.startswith("RUN --mount=type=cache,target=/tmp/pip-cache,sharing=locked sh ")
    assert sum(r.count("--mount") for r in runs) == 3  # only the RUNs right below a note


# pip download's lines for a wheel it finds in --dest, and for one it fetches.
PIP_REUSED = re.compile(r"File was already downloaded \S*/([A-Za-z0-9_.]+?)-\d[^/\s]*\.whl")
PIP_DOWNLOAD = re.compile(r"Downloading \S+\.whl")


def test_the_builder_setting_is_checked():
    with pytest.raises(WorkbenchError, match=r"workbench\.builder is 'kaniko': use auto, buildkit or classic"):
        images.choose_builder("kaniko")
    assert images.choose_builder("classic") is None


@pytest.mark.docker
def test_a_one_line_change_rebuilds_from_apts_and_pips_caches(docker_client, project):
    """After a change that invalidates the package steps, BuildKit runs them again without downloading a
    package: apt installs from the cache mount's archives, pip from the wheelhouse in its own."""
    plan, files = images.plan_build(project.settings.with_overrides(tag=f"{project.settings.tag}-{project.name}"))
    if plan.builder is None:
        pytest.skip("no docker CLI here builds with BuildKit (no buildx plugin, no CLI older than 23)")
    assert images.daemon_engine(docker_client) == "Engine"  # Docker's: BuildKit through the CLI applies
    script = "docker/install-dev-packages.sh"

    def one_line_change() -> dict[str, bytes]:
        return {**files, script: files[script] + f"# rebuild {uuid.uuid4().hex}\n".encode()}

    # The first change fills the cache mounts wherever the daemon's build cache lost them (tests/run.sh bounds
    # its size); the second is the measured one.
    images.build(docker_client, plan, one_line_change(), on_line=lambda line: None)
    lines: list[str] = []
    began = time.monotonic()
    images.build(docker_client, plan, one_line_change(), on_line=lines.append)
    seconds = time.monotonic() - began
    log = "\n".join(lines)
    assert "Setting up gdb" in log, log[-3000:]  # the apt step ran again
    assert not APT_PACKAGE_DOWNLOAD.search(log), APT_PACKAGE_DOWNLOAD.findall(log)[:5]
    # pip took every tool from the wheelhouse in its cache mount and fetched no wheel again
    assert "pip cache: /tmp/pip-cache/wheelhouse (a BuildKit cache mount" in log, log[-3000:]
    reused = set(PIP_REUSED.findall(log))
    assert {"pytest", "debugpy", "ipdb", "cmake", "ninja"} <= {name.lower() for name in reused}, log[-3000:]
    assert not PIP_DOWNLOAD.search(log), PIP_DOWNLOAD.findall(log)[:5]
    print(f"rebuild after a one-line change: {seconds:.0f} s through {plan.builder.why}")
    made = docker_client.images.get(plan.tag)
    assert made.labels[labels.BASE_IMAGE] == plan.base_image
