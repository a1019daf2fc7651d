"""Microbenchmarks of the GEMM family against cuBLAS (``python -m custom_kernels.bench.gemm``)."""
