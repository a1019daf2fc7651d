"""`invoke doctor`: each precondition of the workflow as a ✅/⚠️/❌ line with the fix."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass

from workbench import gpus as gpus_mod
from workbench.config import Settings
from workbench.container import labels
from workbench.container.daemon import connect, nvidia_runtime_present
from workbench.errors import WorkbenchError
from workbench.fork.source import fork_state
from workbench.git import fork_checkout_fix
from workbench.gpu_selection import parse_gpu_selection

OK, WARN, FAIL = "ok", "warn", "fail"
MIN_FREE_DISK_GB = 50  # the vllm-openai image is ~20 GB; a full build adds ~10 GB of objects and ccache


@dataclass(frozen=True)
class Check:
    name: str
    status: str
    detail: str
    fix: str = ""

    @property
    def icon(self) -> str:
        return {OK: "✅", WARN: "⚠️ ", FAIL: "❌"}[self.status]


def report(checks: list[Check]) -> dict:
    """What `invoke doctor` shows, as data (its --json): every check with its fix, and whether all passed."""
    return {"ok": not any(c.status == FAIL for c in checks),
            "checks": [{"name": c.name, "status": c.status, "detail": c.detail, "fix": c.fix} for c in checks]}


def _check_daemon(ctx: dict) -> Check:
    try:
        client = connect(timeout=15)
    except WorkbenchError as err:
        return Check("Docker daemon", FAIL, *err.parts())
    ctx["client"] = client
    info = client.info()
    ctx["info"] = info
    where = os.environ.get("DOCKER_HOST", "the default socket")
    return Check("Docker daemon", OK, f"Docker {info.get('ServerVersion', '?')} at {where}")


def _check_runtime(ctx: dict) -> Check:
    info = ctx.get("info")
    wants_gpu = parse_gpu_selection(ctx["settings"].gpus) != "none"
    if info is None:
        return Check("NVIDIA container runtime", FAIL, "unknown: no daemon", "start Docker first")
    if nvidia_runtime_present(info):
        return Check("NVIDIA container runtime", OK, "docker info lists the nvidia runtime")
    return Check(
        "NVIDIA container runtime", FAIL if wants_gpu else WARN, "docker info lists no nvidia runtime",
        "install the NVIDIA Container Toolkit, then `sudo nvidia-ctk runtime configure --runtime=docker` and "
        "restart Docker; or work without GPUs: invoke up --gpus none",
    )


def _check_gpus(ctx: dict) -> Check:
    wants_gpu = parse_gpu_selection(ctx["settings"].gpus) != "none"
    try:
        found = gpus_mod.query_gpus()
        driver = gpus_mod.driver_info()
    except WorkbenchError as err:
        return Check("GPUs (NVML)", FAIL if wants_gpu else WARN, err.parts()[0],
                     "install the NVIDIA driver, or work CPU-only: gpus: none in invoke.yaml (or "
                     "INVOKE_WORKBENCH_GPUS=none) and invoke up --gpus none")
    if not found:
        return Check("GPUs (NVML)", FAIL if wants_gpu else WARN, "NVML sees no GPU", "check the driver (nvidia-smi)")
    names = ", ".join(
        f"{g.index}: {g.name} (cc {g.compute_capability[0]}.{g.compute_capability[1]}, "
        f"{g.memory_total_bytes / 2**30:.0f} GiB, {g.memory_free_bytes / 2**30:.0f} GiB free)"
        for g in found
    )
    return Check("GPUs (NVML)", OK, f"driver {driver.driver_version} (CUDA {driver.cuda_driver_version}); {names}")


def _check_fork(ctx: dict) -> Check:
    settings: Settings = ctx["settings"]
    path = settings.fork_path
    state = fork_state(path)
    if not state.initialised:
        return Check("vLLM fork", FAIL, f"{path} is missing or empty", fork_checkout_fix(path))
    where = state.branch or "detached HEAD"
    dirty = f", {len(state.dirty_files)} modified file(s)" if state.dirty else ""
    return Check("vLLM fork", OK, f"{path} at {state.short} ({where}{dirty})")


def _check_hf_cache(ctx: dict) -> Check:
    path = ctx["settings"].hf_cache_path
    if not path.exists():
        return Check("Hugging Face cache", WARN, f"{path} does not exist yet",
                     f"invoke up creates it; or point HF_HOME / workbench.hf_cache at your cache (mkdir -p {path})")
    if not os.access(path, os.W_OK):
        return Check("Hugging Face cache", FAIL, f"{path} is not writable by you", f"sudo chown -R $USER {path}")
    return Check("Hugging Face cache", OK, str(path))


def _check_disk(ctx: dict) -> Check:
    settings: Settings = ctx["settings"]
    where = ctx.get("info", {}).get("DockerRootDir") or str(settings.root)
    target = where if os.path.exists(where) else str(settings.root)
    free_gb = shutil.disk_usage(target).free / 1e9
    if free_gb < MIN_FREE_DISK_GB:
        return Check("Free disk", WARN, f"{free_gb:.0f} GB free at {target}",
                     f"free space: the dev image and a full build need about {MIN_FREE_DISK_GB} GB "
                     "(docker system prune removes unused images)")
    return Check("Free disk", OK, f"{free_gb:.0f} GB free at {target}")


def _check_uid(ctx: dict) -> Check:
    settings: Settings = ctx["settings"]
    client = ctx.get("client")
    if client is None:
        return Check("UID mapping", WARN, "unknown: no daemon", "start Docker first")
    from docker.errors import ImageNotFound

    try:
        image = client.images.get(settings.image_ref)
    except ImageNotFound:
        return Check("Dev image / UID mapping", WARN, f"{settings.image_ref} not built yet", "invoke build")
    built = image.labels or {}
    uid, gid = built.get(labels.UID), built.get(labels.GID)
    if (uid, gid) != (str(settings.host_uid), str(settings.host_gid)):
        return Check("Dev image / UID mapping", FAIL,
                     f"{settings.image_ref} runs as {uid}:{gid}, you are {settings.host_uid}:{settings.host_gid}: "
                     "files it writes into mounts would not be yours", "invoke build (rebuilds with your UID/GID)")
    return Check("Dev image / UID mapping", OK, f"{settings.image_ref} runs as {uid}:{gid}, like you")


CHECKS: tuple[Callable[[dict], Check], ...] = (
    _check_daemon, _check_runtime, _check_gpus, _check_fork, _check_hf_cache, _check_disk, _check_uid,
)


def run_checks(settings: Settings) -> list[Check]:
    ctx: dict = {"settings": settings}
    results = []
    for check in CHECKS:
        try:
            results.append(check(ctx))
        except Exception as err:  # a check that crashes is itself a finding, not a traceback
            results.append(Check(check.__name__.removeprefix("_check_"), FAIL, f"check crashed: {err}"))
    if "client" in ctx:
        ctx["client"].close()
    return results
