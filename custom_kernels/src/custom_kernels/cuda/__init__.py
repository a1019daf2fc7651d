"""CUDA C++ kernels built with torch's cpp_extension at first use (needs nvcc/CUDA headers)."""
