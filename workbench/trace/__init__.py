"""Tracing of the inference path: module calls (hooks), CUDA kernels (torch.profiler) and kernel -> source.

Import-safe without invoke, docker or vLLM (the scripts under scripts/ use it inside the container):
``ModuleTracer`` works on any ``nn.Module``; ``build_index`` scans a vLLM tree's csrc/ for kernels;
``kernels_from_trace`` turns a Chrome trace into the kernel table. Records are dataclasses saved as JSON.
"""

from workbench.trace.kernel_map import KernelIndex, KernelSource, build_index
from workbench.trace.kernels import kernels_from_trace, profile_to_chrome_trace
from workbench.trace.modules import ModuleTracer, find_decoder_layers, operator_summary
from workbench.trace.records import load_trace, save_trace

__all__ = ["KernelIndex", "KernelSource", "ModuleTracer", "build_index", "find_decoder_layers",
           "kernels_from_trace", "load_trace", "operator_summary", "profile_to_chrome_trace", "save_trace"]
