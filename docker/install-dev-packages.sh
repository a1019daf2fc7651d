#!/bin/sh
# Build tools and debuggers for kernel work; on a CUDA image also the CUDA dev libraries (headers
# and libs for cuBLAS/cuSPARSE/cuRAND/cuSOLVER/NVRTC/NVML, cuSPARSELt) that a full vLLM build and a
# cuBLASLt/cuSPARSELt kernel need, matching the image's CUDA version.
set -eu
apt-get update
apt-get install -y --no-install-recommends \
  git build-essential ccache gdb sudo curl ca-certificates less vim-tiny procps
if [ -n "${CUDA_VERSION:-}" ]; then
  cuda=$(echo "$CUDA_VERSION" | cut -d. -f1,2 | tr . -)        # 12.9.1 -> 12-9
  major=$(echo "$CUDA_VERSION" | cut -d. -f1)
  apt-get install -y --no-install-recommends \
    "cuda-libraries-dev-$cuda" "cuda-nvml-dev-$cuda" "cuda-nvtx-$cuda" \
    "cuda-profiler-api-$cuda" "cuda-cudart-dev-$cuda" "cuda-nvcc-$cuda"
  # cuSPARSELt's package name changed across CUDA repos; take whichever this one has.
  apt-get install -y --no-install-recommends "libcusparselt-dev-cuda-$major" \
    || apt-get install -y --no-install-recommends libcusparselt-dev \
    || echo "warning: no cuSPARSELt dev package in this CUDA repository"
else
  echo "no CUDA_VERSION in the base image: skipping the CUDA dev libraries"
fi
rm -rf /var/lib/apt/lists/*
