#!/bin/sh
# Build tools and debuggers for kernel work; on a CUDA image also the CUDA dev libraries (headers
# and libs for cuBLAS/cuSPARSE/cuRAND/cuSOLVER/NVRTC/NVML, cuSPARSELt) that a full vLLM build and a
# cuBLASLt/cuSPARSELt kernel need, matching the image's CUDA version.
set -eu
# Under BuildKit apt's caches are cache mounts that outlive the build: keep the downloaded packages there
# (the base image's docker-clean hook would delete them) and leave the lists; without the mounts (the
# classic builder) nothing is kept in the image.
cached=no
if grep -qs " /var/cache/apt " /proc/self/mountinfo; then
  cached=yes
  if [ -f /etc/apt/apt.conf.d/docker-clean ]; then mv /etc/apt/apt.conf.d/docker-clean /tmp/docker-clean; fi
fi
# Headers of the interpreter the image runs (vllm-openai: deadsnakes 3.12, where python3-dev would be 3.10's).
pyver=$(python3 -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
apt-get update
apt-get install -y --no-install-recommends \
  git build-essential ccache gdb sudo curl ca-certificates less vim-tiny procps "python$pyver-dev"
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
if [ "$cached" = yes ]; then
  if [ -f /tmp/docker-clean ]; then mv /tmp/docker-clean /etc/apt/apt.conf.d/docker-clean; fi
else
  rm -rf /var/lib/apt/lists/*
  apt-get clean
fi
