"""GPUs through NVML (nvidia-ml-py), never by parsing nvidia-smi.

``query_gpus()`` returns one ``GpuInfo`` per device (or raises WorkbenchError when NVML has no
driver to talk to); ``torch_cuda_arch_list()`` turns compute capabilities into the
TORCH_CUDA_ARCH_LIST a vLLM build for those GPUs needs.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from workbench.errors import WorkbenchError

# Architectures whose arch-specific ("a") features vLLM's kernels use (wgmma/TMA on Hopper,
# tcgen05 on Blackwell): a build for 9.0 without "a" compiles those kernels out.
_ARCH_SPECIFIC = {(9, 0), (10, 0), (10, 3), (12, 0), (12, 1)}


@dataclass(frozen=True)
class GpuProcess:
    pid: int
    used_memory_bytes: int | None
    name: str = ""


@dataclass(frozen=True)
class GpuInfo:
    index: int
    name: str
    compute_capability: tuple[int, int]
    memory_total_bytes: int
    memory_used_bytes: int
    memory_free_bytes: int
    utilization_gpu_percent: int | None = None
    uuid: str = ""
    processes: tuple[GpuProcess, ...] = field(default_factory=tuple)

    @property
    def arch(self) -> str:
        major, minor = self.compute_capability
        return f"{major}.{minor}" + ("a" if (major, minor) in _ARCH_SPECIFIC else "")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class DriverInfo:
    driver_version: str
    cuda_driver_version: str  # e.g. "13.0": the newest CUDA runtime this driver supports


def torch_cuda_arch_list(gpus: list[GpuInfo]) -> str:
    """TORCH_CUDA_ARCH_LIST for these GPUs, e.g. "9.0a" for H100s or "8.0;8.9" for a mix."""
    if not gpus:
        raise WorkbenchError("no GPU to derive TORCH_CUDA_ARCH_LIST from: pass --arch (e.g. --arch 9.0a)")
    archs = sorted({g.compute_capability: g.arch for g in gpus}.items())
    return ";".join(arch for _, arch in archs)


def report(gpus: list[GpuInfo], driver: DriverInfo) -> dict:
    """What `invoke gpus` shows, as data (its --json): the driver, each GPU with its arch, the arch list."""
    return {"driver_version": driver.driver_version, "cuda_driver_version": driver.cuda_driver_version,
            "gpus": [{**g.to_dict(), "arch": g.arch} for g in gpus],
            "torch_cuda_arch_list": torch_cuda_arch_list(gpus) if gpus else None}


def select(gpus: list[GpuInfo], selection: str) -> list[GpuInfo]:
    """The GPUs a --gpus value names ("all", "none" or "0,2")."""
    from workbench.gpu_selection import parse_gpu_selection

    wanted = parse_gpu_selection(selection)
    if wanted == "all":
        return gpus
    if wanted == "none":
        return []
    by_index = {g.index: g for g in gpus}
    missing = [i for i in wanted if i not in by_index]
    if missing:
        have = ", ".join(str(i) for i in sorted(by_index)) or "none"
        raise WorkbenchError(f"GPU {missing[0]} is selected but this host does not have it (GPUs: {have})",
                             fix="select GPUs it has (--gpus / --select / workbench.gpus)")
    return [by_index[i] for i in wanted]


def _nvml():
    try:
        import pynvml
    except ImportError as err:  # the dependency is declared; this is a broken environment
        raise WorkbenchError("nvidia-ml-py is not installed: pip install nvidia-ml-py") from err
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as err:
        raise WorkbenchError(
            f"NVML unavailable ({err}): no NVIDIA driver on this host",
            fix="install the driver, or work without GPUs (invoke up --gpus none, or gpus: none in invoke.yaml)",
        ) from err
    return pynvml


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def driver_info() -> DriverInfo:
    nvml = _nvml()
    try:
        cuda = nvml.nvmlSystemGetCudaDriverVersion_v2()
        return DriverInfo(_text(nvml.nvmlSystemGetDriverVersion()), f"{cuda // 1000}.{(cuda % 1000) // 10}")
    finally:
        nvml.nvmlShutdown()


def query_gpus() -> list[GpuInfo]:
    """Every GPU NVML sees, with memory, utilisation and the compute processes on it."""
    nvml = _nvml()
    try:
        result = []
        for index in range(nvml.nvmlDeviceGetCount()):
            handle = nvml.nvmlDeviceGetHandleByIndex(index)
            mem = nvml.nvmlDeviceGetMemoryInfo(handle)
            try:
                util = nvml.nvmlDeviceGetUtilizationRates(handle).gpu
            except nvml.NVMLError:
                util = None
            try:
                procs = tuple(
                    GpuProcess(p.pid, getattr(p, "usedGpuMemory", None), _process_name(nvml, p.pid))
                    for p in nvml.nvmlDeviceGetComputeRunningProcesses(handle)
                )
            except nvml.NVMLError:
                procs = ()
            result.append(GpuInfo(
                index=index,
                name=_text(nvml.nvmlDeviceGetName(handle)),
                compute_capability=tuple(nvml.nvmlDeviceGetCudaComputeCapability(handle)),
                memory_total_bytes=int(mem.total),
                memory_used_bytes=int(mem.used),
                memory_free_bytes=int(mem.free),
                utilization_gpu_percent=util,
                uuid=_text(nvml.nvmlDeviceGetUUID(handle)),
                processes=procs,
            ))
        return result
    finally:
        nvml.nvmlShutdown()


def _process_name(nvml, pid: int) -> str:
    try:
        return _text(nvml.nvmlSystemGetProcessName(pid))
    except nvml.NVMLError:
        return ""


def first_gpu_name() -> str | None:
    """The first GPU NVML sees on this machine (the one a bench run here uses: the host runtime's, or the one the
    dev container is given), None where there is no driver."""
    try:
        found = query_gpus()
    except WorkbenchError:
        return None
    return found[0].name if found else None
