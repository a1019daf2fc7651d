"""Tasks about the host: doctor (preconditions with fixes) and gpus (NVML table)."""

from __future__ import annotations

from invoke import task
from invoke.exceptions import Exit

from workbench.config import settings_from_context


@task
def doctor(ctx):
    """Check every precondition (daemon, NVIDIA runtime, GPUs, fork, HF cache, disk, UID) with the fix."""
    from workbench.container import doctor as doctor_mod
    from workbench.ui import print_checks

    checks = doctor_mod.run_checks(settings_from_context(ctx))
    print_checks(checks)
    failed = [c for c in checks if c.status == doctor_mod.FAIL]
    if failed:
        raise Exit(f"{len(failed)} check(s) failed: apply the fixes above", code=1)


@task(help={"select": "Only these GPUs: all (default) or indices like 0,1"})
def gpus(ctx, select="all"):
    """List GPUs through NVML and the TORCH_CUDA_ARCH_LIST they imply."""
    from workbench import gpus as gpus_mod
    from workbench.ui import console, print_gpus

    found = gpus_mod.select(gpus_mod.query_gpus(), select)
    driver = gpus_mod.driver_info()
    print_gpus(found, driver)
    if found:
        console.print(f"TORCH_CUDA_ARCH_LIST={gpus_mod.torch_cuda_arch_list(found)}")


TASKS = [doctor, gpus]
