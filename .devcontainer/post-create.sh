#!/bin/sh
# postCreateCommand of both devcontainer configurations: make the workbench's debug configurations
# visible in the opened folder (/workspace/vllm; vLLM's .gitignore ignores .vscode/, and an existing
# launch.json of the user's is never replaced), then report the container's state. Never fails the
# container's creation: "not set up yet" is the normal first state (docs/workflow.md).
set -u
wb=/workspace/workbench
target=/workspace/vllm/.vscode/launch.json
if [ -e "$target" ] || [ -L "$target" ]; then
  echo "debug configurations: $target exists, left as is (the workbench's: $wb/.vscode/launch.json)"
elif mkdir -p /workspace/vllm/.vscode 2>/dev/null && ln -s "$wb/.vscode/launch.json" "$target"; then
  echo "debug configurations: $target -> $wb/.vscode/launch.json"
else
  echo "debug configurations: could not link $target (read-only fork?): open $wb to use them"
fi
exec python "$wb/.devcontainer/verify.py" --no-fail
