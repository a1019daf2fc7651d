#!/bin/sh
# The dev tools, with pip into the venv itself (the system pip would install outside it). cmake and ninja
# from pip: vLLM needs cmake >= 3.26, newer than Ubuntu 22.04's. Under BuildKit pip's downloads live in a
# cache mount (/tmp/pip-cache) reused by the next build; without it (the classic builder) pip keeps no cache.
set -eu
if grep -qs " /tmp/pip-cache " /proc/self/mountinfo; then
  export PIP_CACHE_DIR=/tmp/pip-cache
  echo "pip cache: $PIP_CACHE_DIR (a BuildKit cache mount; $(du -sm "$PIP_CACHE_DIR" | cut -f1) MB)"
else
  export PIP_NO_CACHE_DIR=1
fi
"$VIRTUAL_ENV/bin/python" -m pip install --upgrade pip
"$VIRTUAL_ENV/bin/python" -m pip install pytest debugpy ipdb "cmake>=3.26" ninja
