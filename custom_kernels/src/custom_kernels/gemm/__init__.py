"""The GEMM kernel family: Triton kernels + launchers, a reference, and the candidate registry."""
