"""Pure logic of the ground floor: config, GPU selection and arch list."""

from __future__ import annotations

import pytest

from workbench.config import DEFAULTS, Settings
from workbench.errors import WorkbenchError
from workbench.gpu_selection import parse_gpu_selection
from workbench.gpus import GpuInfo, select, torch_cuda_arch_list


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
