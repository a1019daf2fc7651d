"""NVML on a real GPU host (gpu tier): what `invoke gpus` and `invoke doctor` read."""

from __future__ import annotations

import pytest

from workbench import gpus

pytestmark = pytest.mark.gpu


def test_nvml_sees_the_gpus_torch_sees():
    import torch

    found = gpus.query_gpus()
    assert len(found) == torch.cuda.device_count() >= 1
    for g in found:
        props = torch.cuda.get_device_properties(g.index)
        assert g.compute_capability == (props.major, props.minor)
        assert g.name == props.name
        assert abs(g.memory_total_bytes - props.total_memory) < 0.05 * props.total_memory
        assert 0 <= g.memory_used_bytes <= g.memory_total_bytes
        assert g.memory_free_bytes <= g.memory_total_bytes
    driver = gpus.driver_info()
    assert driver.driver_version.count(".") >= 1 and float(driver.cuda_driver_version) >= 12.0


def test_arch_list_for_this_host():
    found = gpus.query_gpus()
    arch = gpus.torch_cuda_arch_list(found)
    if all(g.compute_capability == (9, 0) for g in found):  # H100 / H200
        assert arch == "9.0a"
    assert all(part[0].isdigit() for part in arch.split(";"))


def test_processes_include_this_one_while_it_holds_memory():
    import os

    import torch

    x = torch.empty(256 * 2**20, dtype=torch.uint8, device="cuda")  # 256 MiB held during the query
    pids = {p.pid for g in gpus.query_gpus() for p in g.processes}
    del x
    # Containers/VMs may hide PIDs from NVML; when NVML lists any process it must list us.
    if pids:
        assert os.getpid() in pids
