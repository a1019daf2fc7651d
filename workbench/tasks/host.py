"""Tasks about the host: doctor (preconditions with fixes) and gpus (NVML table)."""

from __future__ import annotations

from invoke import task
from invoke.exceptions import Exit

from workbench.config import settings_from_context

JSON_HELP = "Print one JSON document (the same facts) on stdout instead of the table"


@task(help={"json": JSON_HELP})
def doctor(ctx, json=False):
    """Check every precondition (daemon, NVIDIA runtime, GPUs, fork, HF cache, disk, UID) with the fix."""
    from workbench.container import doctor as doctor_mod
    from workbench.ui import print_checks, print_json

    checks = doctor_mod.run_checks(settings_from_context(ctx))
    if json:
        print_json(doctor_mod.report(checks))
    else:
        print_checks(checks)
    failed = [c for c in checks if c.status == doctor_mod.FAIL]
    if failed:
        raise Exit(f"{len(failed)} check(s) failed: apply the fixes {'in the JSON' if json else 'above'}", code=1)


@task(help={"select": "Only these GPUs: all (default) or indices like 0,1", "json": JSON_HELP})
def gpus(ctx, select="all", json=False):
    """List GPUs through NVML and the TORCH_CUDA_ARCH_LIST they imply."""
    from workbench import gpus as gpus_mod
    from workbench.ui import console, print_gpus, print_json

    found = gpus_mod.select(gpus_mod.query_gpus(), select)
    driver = gpus_mod.driver_info()
    if json:
        print_json(gpus_mod.report(found, driver))
        return
    print_gpus(found, driver)
    if found:
        console.print(f"TORCH_CUDA_ARCH_LIST={gpus_mod.torch_cuda_arch_list(found)}")


TASKS = [doctor, gpus]
