#!/usr/bin/env bash
# Split the GPU host's vLLM (../shared/device-vllm/build.sh's archive) into pieces that each fit one device call
# beside this checkout: a call carries the working tree and its carry together, at most 64 MiB, and the tracked
# tree grows with every committed result (19 MiB on 2026-12-01, when build.sh's 58 MiB pieces stopped fitting).
#
#   bash benchmarks/engine/pieces.sh [ARCHIVE]     # from the checkout's root; default ARCHIVE: build.sh's, in
#                                                  # $DEVICE_VLLM_CACHE or ~/.cache/device-vllm (vLLM 0.24.0)
#
# Writes .device-vllm/c1..cN (each a piece and device.sh, as build.sh lays them out) and says how many calls the
# staging takes; run build.sh first if the archive is missing.
set -euo pipefail
root=$(git rev-parse --show-toplevel)  # the checkout the calls send: the one this is run in
shared=${DEVICE_VLLM_SHARED:-$root/../shared/device-vllm}
archive=${1:-${DEVICE_VLLM_CACHE:-$HOME/.cache/device-vllm}/0.24.0/site.tar.xz}
if [ ! -f "$archive" ]; then
  echo "error: no archive at $archive: run bash ../shared/device-vllm/build.sh first (or pass the archive)" >&2
  exit 2
fi
if [ ! -f "$shared/device.sh" ]; then
  echo "error: no device.sh in $shared: set DEVICE_VLLM_SHARED to the device-vllm folder" >&2
  exit 2
fi
limit=$((64 << 20))
tree=$(cd "$root" && git ls-files -z --cached --others --exclude-standard | xargs -0 -r stat -c %s 2>/dev/null \
       | awk '{s += $1} END {print s + 0}')
wheels=$(du -sb "$root/.whl" 2>/dev/null | cut -f1 || true)
room=$((limit - tree - ${wheels:-0} - (1 << 20)))  # 1 MiB for device.sh and what changes before the call
if [ "$room" -le $((8 << 20)) ]; then
  echo "error: the working tree takes $((tree >> 20)) MiB of the call's 64: too little room for vLLM's pieces" >&2
  exit 2
fi
total=$(stat -c %s "$archive")
n=$(((total + room - 1) / room))
size=$(((total + n - 1) / n))
out="$root/.device-vllm"
exclude=$(cd "$root" && realpath -m "$(git rev-parse --git-path info/exclude)")
mkdir -p "$(dirname "$exclude")"
grep -qx '/.device-vllm/' "$exclude" 2>/dev/null || echo '/.device-vllm/' >> "$exclude"  # never committed
rm -rf "$out" && mkdir -p "$out"
split -b "$size" -d -a 2 "$archive" "$out/site.tar.xz.part-"
k=0
for part in "$out"/site.tar.xz.part-*; do
  k=$((k + 1)); mkdir -p "$out/c$k"; mv "$part" "$out/c$k/"; cp "$shared/device.sh" "$out/c$k/"
done
echo "$k pieces of $((size >> 20)) MiB in .device-vllm/ (the tree takes $((tree >> 20)) MiB): stage them in $k" \
     "back-to-back calls, carrying .device-vllm/cK (and .whl), the last with 'unpack'"
