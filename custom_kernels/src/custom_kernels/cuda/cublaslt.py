"""Build, load and call the cuBLASLt bias-epilogue GEMM (cublaslt_gemm.cpp) through torch ops.

The extension is compiled with ``torch.utils.cpp_extension.load`` the first time it is needed
(about a minute; cached afterwards under TORCH_EXTENSIONS_DIR) and registers
``torch.ops.custom_kernels_cuda.cublaslt_linear``. Where it can't build (no CUDA toolkit, CPU-only
torch) ``unavailable_reason()`` says why and the dispatcher never picks it.
"""

from __future__ import annotations

import functools
import os
import shutil
from pathlib import Path

import torch

SOURCE = Path(__file__).with_name("cublaslt_gemm.cpp")


@functools.lru_cache(maxsize=1)
def unavailable_reason() -> str | None:
    """None when the extension can be built and used here, else one line saying why not."""
    if not torch.cuda.is_available():
        return "no CUDA device"
    if torch.version.cuda is None:
        return "torch is a CPU build"
    from torch.utils.cpp_extension import CUDA_HOME

    if CUDA_HOME is None or not (Path(CUDA_HOME) / "include" / "cublasLt.h").exists():
        return "no CUDA toolkit with cublasLt.h (set CUDA_HOME)"
    if shutil.which("c++") is None and shutil.which("g++") is None:
        return "no C++ compiler"
    return None


@functools.lru_cache(maxsize=1)
def load() -> None:
    """Compile (once) and load the extension; raises RuntimeError with the reason if it can't."""
    reason = unavailable_reason()
    if reason:
        raise RuntimeError(f"cuBLASLt extension unavailable: {reason}")
    from torch.utils.cpp_extension import CUDA_HOME
    from torch.utils.cpp_extension import load as cpp_load

    cpp_load(name="custom_kernels_cublaslt", sources=[str(SOURCE)], with_cuda=True, is_python_module=False,
             extra_cflags=["-O3"], extra_ldflags=[f"-L{Path(CUDA_HOME) / 'lib64'}", "-lcublasLt"],
             verbose=os.environ.get("CUSTOM_KERNELS_VERBOSE_BUILD") == "1")


_build_error: str | None = None


def available() -> bool:
    """Can the dispatcher use it? Builds on first ask; a failed build is remembered, never retried."""
    global _build_error
    if unavailable_reason() is not None or _build_error is not None:
        return False
    try:
        load()
    except Exception as err:  # compiler/linker errors: fall back to cuBLAS, say why once
        _build_error = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
        import warnings

        warnings.warn(f"custom_kernels: cuBLASLt extension failed to build, using cuBLAS: {_build_error}",
                      stacklevel=2)
        return False
    return True


def gemm_cublaslt(x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor | None = None,
                  config: dict | None = None) -> torch.Tensor:
    """y = x @ w.T + bias through cuBLASLt with the bias fused; config {"algo": i} picks the i-th heuristic."""
    load()
    return torch.ops.custom_kernels_cuda.cublaslt_linear(x, w, bias, int((config or {}).get("algo", 0)))


def num_algos(x: torch.Tensor, w: torch.Tensor, has_bias: bool) -> int:
    """How many ranked algorithms cuBLASLt's heuristic offers for this problem."""
    load()
    return int(torch.ops.custom_kernels_cuda.cublaslt_num_algos(x, w, has_bias))
