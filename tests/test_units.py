"""Pure logic of the foundation: config, GPU selection and arch list, provenance, build context."""

from __future__ import annotations

from pathlib import Path

import pytest

from workbench.config import DEFAULTS, Settings
from workbench.container import images, provenance
from workbench.errors import WorkbenchError
from workbench.fork.source import ForkState
from workbench.gpu_selection import parse_gpu_selection
from workbench.gpus import GpuInfo, select, torch_cuda_arch_list

ROOT = Path(__file__).resolve().parent.parent


def gpu(index: int, cc: tuple[int, int], name: str = "NVIDIA H100 80GB HBM3") -> GpuInfo:
    return GpuInfo(index, name, cc, 80 * 2**30, 2**30, 79 * 2**30)


@pytest.mark.parametrize(("gpus", "expected"), [
    ([gpu(0, (9, 0))], "9.0a"),
    ([gpu(0, (9, 0)), gpu(1, (9, 0))], "9.0a"),
    ([gpu(0, (8, 9)), gpu(1, (8, 0))], "8.0;8.9"),
    ([gpu(0, (10, 0)), gpu(1, (8, 6))], "8.6;10.0a"),
])
def test_arch_list(gpus, expected):
    assert torch_cuda_arch_list(gpus) == expected


def test_arch_list_without_gpus_says_what_to_do():
    with pytest.raises(WorkbenchError, match="pass --arch"):
        torch_cuda_arch_list([])


@pytest.mark.parametrize(("value", "expected"), [("all", "all"), ("NONE", "none"), ("0", (0,)), ("1, 3", (1, 3))])
def test_gpu_selection(value, expected):
    assert parse_gpu_selection(value) == expected


@pytest.mark.parametrize("value", ["abc", "", "0,,1", "-1", "0,0", "gpu0"])
def test_gpu_selection_rejects(value):
    with pytest.raises(WorkbenchError, match="--gpus"):
        parse_gpu_selection(value)


def test_select_names_missing_gpu():
    with pytest.raises(WorkbenchError, match="GPU 3 is selected but this host does not have it"):
        select([gpu(0, (9, 0)), gpu(1, (9, 0))], "0,3")


def test_settings_flags_override_config_and_paths_resolve(tmp_path):
    s = Settings.from_mapping(tmp_path, {"image": "img", "tag": "t", "fork": "myfork", "secrets": "A,B", "uid": 5})
    assert s.image_ref == "img:t" and s.compiled_ref == "img:t-compiled"
    assert s.fork_path == tmp_path / "myfork" and s.secrets == ("A", "B") and s.host_uid == 5
    s2 = s.with_overrides(tag="x", gpus=None)
    assert s2.tag == "x" and s2.gpus == DEFAULTS["gpus"]


def _committed(ref, commit, patches="", at="2026-01-01T00:00:00+00:00"):
    return {"ref": ref, "labels": {"workbench.vllm.commit": commit, "workbench.patches": patches,
                                   "workbench.committed-at": at, "workbench.install.mode": "precompiled"}}


def test_choose_image_prefers_newest_matching_commit():
    state = ForkState(Path("."), True, "a" * 40, "main", patches=("0001-x.patch",))
    choice = provenance.choose_image("img:dev", [
        _committed("img:old", "a" * 40, "0001-x.patch", "2026-01-01T00:00:00+00:00"),
        _committed("img:new", "a" * 40, "0001-x.patch", "2026-02-01T00:00:00+00:00"),
        _committed("img:other", "b" * 40, "0001-x.patch", "2026-03-01T00:00:00+00:00"),
    ], state)
    assert choice.ref == "img:new" and choice.committed and "matches the fork" in choice.reason


def test_choose_image_explains_stale():
    state = ForkState(Path("."), True, "a" * 40, "main")
    choice = provenance.choose_image("img:dev", [_committed("img:c", "b" * 40)], state)
    assert choice.ref == "img:dev" and not choice.committed
    assert "no committed image matches" in choice.reason and "img:c is from vllm bbbbbbbbbbbb" in choice.reason
    patched = provenance.choose_image("img:dev", [_committed("img:c", "a" * 40, "p.patch")], state)
    assert patched.ref == "img:dev"


def test_install_record_parsing():
    assert provenance.parse_install_record(None) == {"mode": "none"}
    assert provenance.parse_install_record('{"mode": "precompiled", "arch_list": "9.0a"}')["arch_list"] == "9.0a"
    assert provenance.parse_install_record("{broken")["mode"].startswith("unknown")


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
