#!/usr/bin/env bash
# Build (or load from cache) the local stand-in for vllm/vllm-openai that the docker tier builds
# Dockerfile.dev on. No image registry is reachable here, so the base is bootstrapped from the
# Debian mirror that apt already uses, then given what the real image has that Dockerfile.dev
# acts on: pip that is not "externally managed" and a preinstalled, non-editable `vllm`
# distribution (a tiny stand-in) with a dependency that must survive its removal.
# Usage: build_test_base.sh CACHE_DIR  -> prints the image name.
set -euo pipefail
cache=${1:?usage: build_test_base.sh CACHE_DIR}
here=$(cd "$(dirname "$0")" && pwd)
key=$(cat "$here/build_test_base.sh" "$here/make_stub_wheels.py" | sha256sum | cut -c1-12)
image="workbench-test-base:$key"
tarball="$cache/test-base-$key.tar"

if docker image inspect "$image" >/dev/null 2>&1; then echo "$image"; exit 0; fi
if [ -f "$tarball" ]; then docker load -q -i "$tarball" >/dev/null && echo "$image" && exit 0; fi

mirror=$(grep -hE '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null | head -n1 | awk '{print $2}')
[ -n "$mirror" ] || mirror=$(grep -hE '^deb ' /etc/apt/sources.list 2>/dev/null | head -n1 | awk '{print $2}')
[ -n "$mirror" ] || { echo "no Debian mirror found in the apt sources" >&2; exit 1; }

# A new key makes the older bases garbage: drop them (image and tarball) before building this one.
docker images --format '{{.Repository}}:{{.Tag}}' workbench-test-base | xargs -r docker rmi >/dev/null 2>&1 || true
rm -f "$cache"/test-base-*.tar

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mmdebstrap --quiet --variant=apt \
  --include=python3,python3-venv,python3-pip,git,ca-certificates \
  bookworm - "$mirror" | docker import -c 'ENV PIP_BREAK_SYSTEM_PACKAGES=1' - "$image-raw" >/dev/null

python3 "$here/make_stub_wheels.py" "$work"
cat >"$work/Dockerfile" <<DOCKERFILE
FROM $image-raw
COPY *.whl /tmp/wheels/
RUN pip install --no-index --find-links /tmp/wheels vllm && rm -rf /tmp/wheels
CMD ["/bin/bash"]
DOCKERFILE
docker build -q -t "$image" "$work" >/dev/null
docker rmi "$image-raw" >/dev/null
mkdir -p "$cache"
docker save -o "$tarball.tmp" "$image" && mv "$tarball.tmp" "$tarball"
echo "$image"
