#!/usr/bin/env bash
# The real-engine work on a GPU host without Docker, the way the committed H200 sessions ran: vLLM is
# already importable (on PYTHONPATH or in the interpreter's environment); this makes the kernels package
# importable *with its dist metadata* (vLLM finds the plugin through its vllm.general_plugins entry point),
# installs wheels carried in .whl/ (invoke, where the host lacks it), and archives results for the trip back.
#
#   eval "$(bash benchmarks/engine/gpu_host.sh setup SCRATCH)"    # prints the exports to eval
#   python3 -m pytest -m vllm_gpu tests/engine                     # the real-engine tier
#   python3 -m invoke bench --runtime host --model qwen2.5-0.5b --aa --repeats 4
#   tensor parallel (2, 4, 8 GPUs): benchmarks/engine/tensor_parallel.md
#   eval "$(bash benchmarks/engine/gpu_host.sh fork DIR)"      # the patch route: a fork of the installed vLLM
#   python3 -m invoke patch && python3 -m invoke bench --runtime host ...
#   bash benchmarks/engine/gpu_host.sh archive OUT.tar.xz          # results/ without caches and model folders
set -euo pipefail
cmd=${1:?usage: gpu_host.sh setup SCRATCH | fork DIR | archive FILE}
root=$(cd "$(dirname "$0")/../.." && pwd)
case "$cmd" in
  setup)
    scratch=${2:?usage: gpu_host.sh setup SCRATCH}
    mkdir -p "$scratch"
    python3 -m pip install -q --no-deps --no-build-isolation --no-compile --upgrade --target "$scratch/ck" \
      "$root/custom_kernels" >&2
    if compgen -G "$root/.whl/*.whl" >/dev/null; then
      python3 -m pip install -q --no-deps --no-index --no-compile --upgrade --target "$scratch/wheels" \
        "$root"/.whl/*.whl >&2
    fi
    # No hub, no usage reports: the host reaches nothing outside. NVLink multicast stays off on shared multi-GPU
    # hosts (a program using it can take the host's GPUs out of service): NCCL, PyTorch and NVSHMEM are told so,
    # and vLLM's symmetric-memory all-reduce (multicast on Hopper) is not tried; every arm gets the same.
    echo "export PYTHONPATH=$scratch/ck:$scratch/wheels\${PYTHONPATH:+:\$PYTHONPATH} HF_HUB_OFFLINE=1" \
         "TRANSFORMERS_OFFLINE=1 VLLM_NO_USAGE_STATS=1 DO_NOT_TRACK=1 PYTHONUNBUFFERED=1" \
         "NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1 VLLM_ALLREDUCE_USE_SYMM_MEM=0"
    ;;
  fork)
    # Where vLLM cannot be built (no network, no compiler time), the closest thing to a fork with an editable
    # install: the installed package copied into a git repository tagged v<release>, put first on PYTHONPATH.
    # The series applies to it like to a checkout (the wheel's .py files are the release's); compiled
    # extensions come along untracked.
    dir=${2:?usage: gpu_host.sh fork DIR}
    src=$(python3 -c "import importlib.util as u; print(u.find_spec('vllm').submodule_search_locations[0])")
    version=$(python3 -c "import importlib.metadata as m; print(m.version('vllm').split('+')[0])")
    if [ -e "$dir/.git" ]; then echo "$dir is already a fork: remove it first" >&2; exit 2; fi
    mkdir -p "$dir"
    cp -a "$src" "$dir/vllm"
    printf '*.so\n__pycache__/\n*.pyc\n' > "$dir/.gitignore"
    git -C "$dir" init -q
    git -C "$dir" add -A
    git -C "$dir" -c user.name=workbench -c user.email=workbench@localhost commit -qm "vLLM $version as installed"
    git -C "$dir" tag "v$version"
    echo "export PYTHONPATH=$dir\${PYTHONPATH:+:\$PYTHONPATH} INVOKE_WORKBENCH_FORK=$dir"
    ;;
  archive)
    out=${2:?usage: gpu_host.sh archive FILE}
    tar -C "$root" --exclude='.vllm-cache' --exclude='.models' -cJf "$out" results
    echo "archived $(du -h "$out" | cut -f1) of results/ to $out"
    ;;
  *) echo "unknown command $cmd: setup or archive" >&2; exit 2 ;;
esac
