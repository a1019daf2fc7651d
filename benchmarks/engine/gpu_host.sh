#!/usr/bin/env bash
# The real-engine work on a GPU host without Docker, the way the committed H200 sessions ran: vLLM is
# already importable (on PYTHONPATH or in the interpreter's environment); this makes the kernels package
# importable *with its dist metadata* (vLLM finds the plugin through its vllm.general_plugins entry point),
# installs wheels carried in .whl/ (invoke, where the host lacks it), and archives results for the trip back.
#
#   eval "$(bash benchmarks/engine/gpu_host.sh setup SCRATCH)"    # prints the exports to eval
#   python3 -m pytest -m vllm_gpu tests/engine                     # the real-engine tier
#   python3 -m invoke bench --runtime host --model qwen2.5-0.5b --aa --repeats 4
#   bash benchmarks/engine/gpu_host.sh archive OUT.tar.xz          # results/ without caches and model folders
set -euo pipefail
cmd=${1:?usage: gpu_host.sh setup SCRATCH | archive FILE}
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
    # No hub, no usage reports: the host reaches nothing outside.
    echo "export PYTHONPATH=$scratch/ck:$scratch/wheels\${PYTHONPATH:+:\$PYTHONPATH} HF_HUB_OFFLINE=1" \
         "TRANSFORMERS_OFFLINE=1 VLLM_NO_USAGE_STATS=1 DO_NOT_TRACK=1 PYTHONUNBUFFERED=1"
    ;;
  archive)
    out=${2:?usage: gpu_host.sh archive FILE}
    tar -C "$root" --exclude='.vllm-cache' --exclude='.models' -cJf "$out" results
    echo "archived $(du -h "$out" | cut -f1) of results/ to $out"
    ;;
  *) echo "unknown command $cmd: setup or archive" >&2; exit 2 ;;
esac
