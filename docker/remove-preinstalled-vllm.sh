#!/bin/sh
# Remove the base image's regular vllm install (the fork gets installed editable instead) and keep
# its dependencies: uninstalling one distribution never removes what it required.
set -eu
if ! python3 -c "import importlib.metadata as m; m.version('vllm')" >/dev/null 2>&1; then
  echo "no preinstalled vllm"; exit 0
fi
version=$(python3 -c "import importlib.metadata as m; print(m.version('vllm'))")
if python3 -m pip --version >/dev/null 2>&1; then
  python3 -m pip uninstall -y vllm
elif command -v uv >/dev/null 2>&1; then
  uv pip uninstall --system vllm
else
  echo "cannot uninstall vllm: neither pip nor uv in the base image" >&2; exit 1
fi
if python3 -c "import importlib.metadata as m; m.version('vllm')" >/dev/null 2>&1; then
  echo "vllm is still installed after uninstall" >&2; exit 1
fi
echo "removed preinstalled vllm $version (dependencies kept)"
