#!/usr/bin/env bash
# The test command (README; .ci/run calls exactly this). On a fresh Debian machine it installs
# what the tiers need, provisions a Docker daemon and the local test base image, then runs every
# tier; the gpu tier skips itself with a printed reason where there is no CUDA device.
# Downloads, the virtualenv, the daemon's state and the test base are cached outside the repo in
# $WORKBENCH_CACHE (default ~/.cache/vllm-workbench). Extra arguments go to pytest.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cache=${WORKBENCH_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/vllm-workbench}
mkdir -p "$cache"
export WORKBENCH_CACHE=$cache

step() { printf '\n== %s\n' "$*"; }

step "system packages (docker.io, docker-compose, mmdebstrap, npm, podman, catatonit)"
missing=()
command -v dockerd >/dev/null || missing+=(docker.io)
command -v docker-compose >/dev/null || missing+=(docker-compose)
command -v mmdebstrap >/dev/null || missing+=(mmdebstrap)
# npm: the devcontainer test installs @devcontainers/cli under $WORKBENCH_CACHE/npm.
command -v npm >/dev/null || missing+=(npm)
# podman: the podman tier talks to `podman system service` (Docker-compatible API) with the docker SDK.
command -v podman >/dev/null || missing+=(podman)
# catatonit: Podman's init for the compose file's `init: true` (a Recommends that minimal installs skip).
[ -x /usr/libexec/podman/catatonit ] || [ -x /usr/bin/catatonit ] || missing+=(catatonit)
if [ ${#missing[@]} -gt 0 ]; then
  sudo_=""; [ "$(id -u)" = 0 ] || sudo_=sudo
  $sudo_ apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_ apt-get install -y -qq "${missing[@]}" >/dev/null
fi
echo "ok: $(dockerd --version)"

step "python environment ($cache/venv)"
[ -x "$cache/venv/bin/python" ] || python3 -m venv "$cache/venv"
# shellcheck disable=SC1091
source "$cache/venv/bin/activate"
# The newest pip, as a new user gets it: the sdist fetch and installs must work with it.
pip install -q --upgrade pip
pip install -q -e "$root[test]" -r "$root/tests/requirements.txt"
python -c "import torch, invoke, docker; print('ok: torch', torch.__version__, '| invoke', invoke.__version__, '| docker SDK', docker.__version__)"

step "docker daemon"
DOCKER_HOST=$(bash "$root/tests/ci/ensure_dockerd.sh" "$cache")
export DOCKER_HOST
echo "ok: $DOCKER_HOST"
# The daemon's state is kept between runs as a cache; its build cache (layers and the apt/pip cache mounts)
# is bounded so that a long-lived CI machine doesn't fill its disk with it.
# (2>: a CLI without buildx warns about its legacy builder here, though the daemon prunes BuildKit's cache)
docker builder prune -f --keep-storage 4GB >/dev/null 2>&1 || echo "note: the build cache was not pruned"

step "test base image"
WORKBENCH_TEST_BASE_IMAGE=$(bash "$root/tests/ci/build_test_base.sh" "$cache")
export WORKBENCH_TEST_BASE_IMAGE
echo "ok: $WORKBENCH_TEST_BASE_IMAGE"

step "ruff"
ruff check "$root"

step "pytest"
cd "$root"
set +e
# One worker per CPU, two at least and four at most: the container daemon's tests (one worker, in order) run beside
# the rest. On CI's two cores the suite took 12-16 minutes warm this way, 22-29 in one process.
workers=$(nproc); [ "$workers" -ge 2 ] || workers=2; [ "$workers" -le 4 ] || workers=4
python -m pytest -n "$workers" --dist loadgroup --durations=20 "$@"
rc=$?
set -e
if [ $rc -eq 5 ]; then echo "pytest collected no tests: that is a failure" >&2; exit 1; fi
exit $rc
