"""The torch custom op behind ``unquantized_gemm``: ``torch.ops.custom_kernels.linear``.

A ``torch.library.custom_op`` with a fake (meta) implementation, so torch.compile(fullgraph=True)
treats it as one opaque node (no graph break) and CUDA-graph capture records the kernels it
launches. The real implementation picks a kernel per call (forced kernel > tuned table > cuBLAS)
and counts the call per layer (see counters.py for what counts mean under CUDA graphs).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import torch
import torch.nn.functional as F

from . import counters
from ._triton import HAS_TRITON, triton_usable
from .dispatch import CUBLAS, DTYPE_NAMES, Choice, active_table, gpu_name
from .gemm.candidates import get_candidate

_HALF = (torch.float16, torch.bfloat16)
_forced: Choice | None = None

# An NVTX range around everything the op launches lets Nsight Compute / Systems select exactly its kernels
# (`ncu --nvtx --nvtx-include "custom_kernels.linear/"`). Read once at import and off by default, so a
# run without a profiler pays one test of a module-level bool per call; CPU builds of torch have no NVTX.
# CUDA-graph replays run no Python and so push no range: profile the op's kernels in eager mode.
NVTX_RANGE = "custom_kernels.linear"
NVTX_ENV = "CUSTOM_KERNELS_NVTX"
NVTX_ON = os.environ.get(NVTX_ENV, "0") not in ("", "0") and hasattr(torch._C, "_nvtx")


@contextlib.contextmanager
def force_kernel(name: str, config: dict | None = None) -> Iterator[None]:
    """Run every GEMM in the block with one candidate (tests, A/B benchmarks); restores on exit."""
    global _forced
    get_candidate(name)  # unknown names fail here, listing the valid ones
    previous, _forced = _forced, Choice(name, config)
    try:
        yield
    finally:
        _forced = previous


def _forced_choice() -> Choice | None:
    if _forced is not None:
        return _forced
    name = os.environ.get("CUSTOM_KERNELS_FORCE")
    return Choice(get_candidate(name).name) if name else None


def _runnable(choice: Choice, x: torch.Tensor, w: torch.Tensor) -> bool:
    cand = get_candidate(choice.kernel)
    if cand.triton:
        return triton_usable(x.device)
    if cand.name == "cublaslt":
        from .cuda import cublaslt

        return x.is_cuda and x.dtype in (*_HALF, torch.float32) and cublaslt.available()
    return True


def select_kernel(x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor | None) -> Choice:
    """Which implementation runs this 2-D call: forced > tuned table > cuBLAS."""
    if os.environ.get("CUSTOM_KERNELS_DISABLE", "0") not in ("", "0"):
        return CUBLAS
    if x.dtype != w.dtype or (bias is not None and bias.dtype != x.dtype) or x.shape[0] == 0 or x.shape[1] == 0:
        return CUBLAS
    forced = _forced_choice()
    if forced is not None:
        return forced if _runnable(forced, x, w) else CUBLAS
    if not (x.is_cuda and x.dtype in _HALF and HAS_TRITON):
        return CUBLAS  # fp32 and CPU tensors: F.linear is the correct (and only tuned) path
    choice = active_table().lookup(gpu_name(x.device), DTYPE_NAMES[x.dtype], w.shape[0], w.shape[1], x.shape[0])
    if choice.kernel == "triton_tma":
        from .gemm.launchers import tma_compatible

        if not tma_compatible(x, w):  # would need a copy: the table's timing no longer holds
            return CUBLAS
    return choice if _runnable(choice, x, w) else CUBLAS


def route_decision(weight: torch.Tensor) -> tuple[bool, str]:
    """Whether a layer with this [N, K] weight is worth routing through the op at all, and why: decided once
    per layer (the vLLM plugin asks when the layer's weights are loaded). A layer that would run cuBLAS at
    every tuned M bucket, or whose shape the table does not know, keeps vLLM's own GEMM: routing it would
    only add the op's cost."""
    if os.environ.get("CUSTOM_KERNELS_DISABLE", "0") not in ("", "0"):
        return False, "CUSTOM_KERNELS_DISABLE is set"
    forced = _forced_choice()
    if forced is not None:
        return True, f"forced kernel {forced.kernel}"
    if not (weight.is_cuda and weight.dtype in _HALF and HAS_TRITON):
        return False, f"{weight.device.type}/{str(weight.dtype).removeprefix('torch.')}: F.linear is the only path"
    n, k = weight.shape
    gpu, dtype = gpu_name(weight.device), DTYPE_NAMES[weight.dtype]
    if active_table().routes_any(gpu, dtype, n, k):
        return True, f"tuned winner for {n}x{k}"
    return False, f"no tuned winner for {n}x{k} ({dtype}) on {gpu}: cuBLAS at every M bucket"


def run_choice(choice: Choice, x2d: torch.Tensor, w: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """Launch one candidate on a 2-D problem."""
    return get_candidate(choice.kernel).launch(x2d, w, bias, choice.config)


def _linear_impl(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
                 layer: str = "") -> torch.Tensor:
    """y = x @ weight.T + bias for any leading dims of x; weight [N, K]."""
    n, k = weight.shape
    lead = x.shape[:-1]
    x2d = x.reshape(-1, k)
    choice = select_kernel(x2d, weight, bias)
    name = layer or "<unnamed>"
    counters.record_call(name, choice.kernel)
    counters.record_device_call(name, x.device)
    if NVTX_ON:
        return _in_nvtx_range(choice, x, x2d, weight, bias)
    if choice.kernel == "cublas":
        return F.linear(x, weight, bias)
    return run_choice(choice, x2d, weight, bias).view(*lead, n)


def _in_nvtx_range(choice: Choice, x: torch.Tensor, x2d: torch.Tensor, weight: torch.Tensor,
                   bias: torch.Tensor | None) -> torch.Tensor:
    """The same launch inside the op's NVTX range (only when CUSTOM_KERNELS_NVTX=1 at import)."""
    torch.cuda.nvtx.range_push(NVTX_RANGE)
    try:
        if choice.kernel == "cublas":
            return F.linear(x, weight, bias)
        return run_choice(choice, x2d, weight, bias).view(*x.shape[:-1], weight.shape[0])
    finally:
        torch.cuda.nvtx.range_pop()


def _linear_fake(x, weight, bias=None, layer=""):
    return x.new_empty((*x.shape[:-1], weight.shape[0]))


SCHEMA = "(Tensor x, Tensor weight, Tensor? bias=None, str layer=\"\") -> Tensor"
REGISTRATIONS = ("direct", "custom_op")
_LIBS: list[torch.library.Library] = []  # a Library unregisters its ops when collected: kept for the process
_REGISTERED: dict[tuple[str, str, str], object] = {}


def register(namespace: str, name: str, how: str):
    """Register ``_linear_impl`` as ``torch.ops.<namespace>.<name>``, and return the callable that runs it.

    "direct": Library.define + impl on the CUDA and CPU keys + register_fake, as vLLM's direct_register_custom_op
    does. "custom_op": torch.library.custom_op + register_fake, whose autograd and Python dispatch layers run on
    every call. Both are opaque single nodes to torch.compile(fullgraph=True) and record into CUDA graphs; they
    differ on the host, in calls made outside a CUDA graph (eager code; vLLM's prefill steps above its largest
    captured size): custom_op's layers add host time to every such call (H200 host, in inference mode: 13.0 against
    8.8 us over F.linear; bench.op_overhead --host). What the op launches costs more than either: a Triton
    split-K launch through the op 53 us over F.linear, cuBLASLt 14 us."""
    key = (namespace, name, how)
    if key in _REGISTERED:  # an op is defined once per process
        return _REGISTERED[key]
    _REGISTERED[key] = _register(namespace, name, how)
    return _REGISTERED[key]


def _register(namespace: str, name: str, how: str):
    if how == "custom_op":
        op = torch.library.custom_op(f"{namespace}::{name}", _linear_impl, mutates_args=(), schema=SCHEMA)
        op.register_fake(_linear_fake)
        return op
    if how != "direct":
        raise ValueError(f"op registration {how!r}: use one of {', '.join(REGISTRATIONS)}")
    lib = torch.library.Library(namespace, "FRAGMENT")
    lib.define(name + SCHEMA)
    for key in ("CUDA", "CPU"):
        lib.impl(name, _linear_impl, key)
    torch.library.register_fake(f"{namespace}::{name}", _linear_fake, lib=lib)
    _LIBS.append(lib)
    return getattr(getattr(torch.ops, namespace), name)


# How this process registers the op: "direct" unless CUSTOM_KERNELS_OP says custom_op (A/B runs). Why direct: in
# a step whose kernels the CPU only just stays ahead of, the op's host cost per call becomes the step's time.
REGISTRATION = os.environ.get("CUSTOM_KERNELS_OP", "direct")
if REGISTRATION not in REGISTRATIONS:
    raise ValueError(f"CUSTOM_KERNELS_OP={REGISTRATION!r}: use one of {', '.join(REGISTRATIONS)}")
_op = register("custom_kernels", "linear", REGISTRATION)


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, layer: str = "") -> torch.Tensor:
    """y = x @ weight.T + bias for any leading dims of x; weight [N, K] (through the registered op)."""
    return _op(x, weight, bias, layer)
