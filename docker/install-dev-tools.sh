#!/bin/sh
# The dev tools, with pip into the venv itself (the system pip would install outside it). cmake and ninja
# from pip: vLLM needs cmake >= 3.26, newer than Ubuntu 22.04's.
# Under BuildKit the downloads land in a wheelhouse inside a cache mount (/tmp/pip-cache) that the next build
# reuses: `pip download` skips a wheel already there ("File was already downloaded") and fetches only what is
# newer on the index. A wheelhouse rather than pip's HTTP cache, because that cache keeps only responses with
# cache headers, and proxies that strip them (common behind TLS interception) would leave it empty.
# Without the mount (the classic builder) pip keeps nothing.
set -eu
tools="pip pytest debugpy ipdb cmake>=3.26 ninja"
pip="$VIRTUAL_ENV/bin/python -m pip"
if grep -qs " /tmp/pip-cache " /proc/self/mountinfo; then
  wheelhouse=/tmp/pip-cache/wheelhouse
  mkdir -p "$wheelhouse"
  echo "pip cache: $wheelhouse (a BuildKit cache mount; $(du -sm "$wheelhouse" | cut -f1) MB)"
  # shellcheck disable=SC2086
  PIP_NO_CACHE_DIR=1 $pip download --dest "$wheelhouse" $tools
  # shellcheck disable=SC2086
  PIP_NO_CACHE_DIR=1 $pip install --upgrade --no-index --find-links "$wheelhouse" $tools
else
  export PIP_NO_CACHE_DIR=1
  $pip install --upgrade pip
  # shellcheck disable=SC2086
  $pip install $tools
fi
