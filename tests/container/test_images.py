"""The dev image's build context and the build errors a user meets (no daemon: the docker tier builds)."""

from __future__ import annotations

from pathlib import Path

import pytest

from support.docker_fixtures import steps_from_cache
from workbench.config import Settings
from workbench.container import images
from workbench.errors import WorkbenchError

ROOT = Path(__file__).resolve().parents[2]


def test_build_context_is_small_and_deterministic(tmp_path):
    settings = Settings.from_mapping(ROOT, {})
    plan, files = images.plan_build(settings)
    assert set(files) >= {"Dockerfile.dev", "docker/create-user.sh", "docker/remove-preinstalled-vllm.sh"}
    assert not any(name.startswith(("vllm/", "custom_kernels/", ".git")) for name in files)
    assert images._context_tar(files).getvalue() == images._context_tar(files).getvalue()
    assert plan.buildargs["BASE_IMAGE"] == "vllm/vllm-openai:v0.13.0"


def test_ca_certs_folder_must_hold_certificates(tmp_path):
    settings = Settings.from_mapping(ROOT, {"ca_certs": str(tmp_path)})
    with pytest.raises(WorkbenchError, match=r"no \*\.crt files there"):
        images.plan_build(settings)
    (tmp_path / "corp.crt").write_text("-----BEGIN CERTIFICATE-----\n")
    _, files = images.plan_build(settings)
    assert "docker/ca-certificates/corp.crt" in files


def test_build_error_messages_name_the_fix():
    plan = images.BuildPlan("img:dev", "vllm/vllm-openai:v0.13.0", {}, (), False)
    msg = images._explain_build_error("pull access denied for vllm/vllm-openai, repository does not exist",
                                      plan, "step 2/23 (FROM ${BASE_IMAGE})")
    assert "--base-image" in msg and "not available" in msg
    msg = images._explain_build_error("The command '/bin/sh -c apt-get' returned a non-zero code: 100", plan,
                                      "step 13/23 (RUN sh install-dev-packages.sh)")
    assert msg.startswith("build failed at step 13/23")
    assert "--ca-certs" in images._explain_build_error("SSL: CERTIFICATE_VERIFY_FAILED", plan, "step 20/23 (RUN)")


@pytest.mark.docker
def test_a_rebuild_keeps_every_cached_step_and_writes_fresh_oci_labels(docker_client, project):
    from workbench import __version__
    from workbench.container import labels

    plan, files = images.plan_build(project.settings.with_overrides(tag=f"{project.settings.tag}-{project.name}"))
    lines: list[str] = []
    images.build(docker_client, plan, files, on_line=lines.append)
    # The dev image of this context was built already: every RUN comes from the cache although the OCI
    # "created" label differs (build-time labels land after the last step).
    assert steps_from_cache(lines, plan.builder is not None), lines
    made = docker_client.images.get(plan.tag).labels
    assert made[labels.OCI_VERSION] == __version__ == made[labels.VERSION]
    assert made[labels.OCI_BASE_NAME] == plan.base_image == made[labels.BASE_IMAGE]
    assert made[labels.OCI_CREATED] == plan.labels[labels.OCI_CREATED]
    assert plan.labels[labels.OCI_CREATED] in plan.describe()
