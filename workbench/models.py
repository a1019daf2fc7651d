"""The one model-config resolver and the shape rules: ``custom_kernels/src/custom_kernels/models.py``,
loaded by its file.

The kernel package owns the shipped configs, the rule that finds them (a shipped name, matched
case-insensitively and by an HF id's last component, a config.json, or a folder holding one) and the
rules that turn a config into the dimensions vLLM builds (head size, KV heads, biases, vocabulary
padding, tied embeddings, tensor-parallel splits). Loading that module by path (not ``import
custom_kernels``, which needs torch) lets the workbench use the very same rules on a host without torch.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

from workbench.errors import WorkbenchError

# The kernels project (custom_kernels/) keeps its package under src/ (an editable install puts src/ on the path).
KERNELS_PACKAGE = Path("custom_kernels") / "src" / "custom_kernels"
MODELS_FILE = KERNELS_PACKAGE / "models.py"
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".gguf")


@functools.cache
def _module(root: Path) -> ModuleType:
    path = root / MODELS_FILE
    if not path.is_file():
        raise WorkbenchError(f"{path} not found: run invoke from the workbench checkout")
    name = "_workbench_kernel_models"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    sys.modules[name] = module  # its dataclasses look their module up while being defined
    spec.loader.exec_module(module)
    return module


def shipped(root: Path) -> list[str]:
    """The shipped model configs' names."""
    return list(_module(root).available_models())


def config_dir(root: Path) -> Path:
    return Path(_module(root).CONFIG_DIR)


def find_config(root: Path, model: str) -> Path | None:
    """The config.json ``model`` names, or None (then it is an HF id or a checkpoint vLLM resolves)."""
    try:
        return Path(_module(root).resolve_config(model))
    except FileNotFoundError:
        return None


def resolve_config(root: Path, model: str) -> Path:
    """Like find_config, but a miss is a one-line error listing the shipped names."""
    found = find_config(root, model)
    if found is None:
        raise WorkbenchError(f"no model config {model!r}: use a config.json, a folder with one, or one of "
                             f"{', '.join(shipped(root))}")
    return found


def config_name(root: Path, path: Path) -> str:
    """A model's name from its config's path (the folder of a config.json, else the file's stem)."""
    return _module(root).config_name(path)


def model_dims(root: Path, config, name: str = ""):
    """custom_kernels.models.ModelDims of a config (a parsed config.json, or a transformers config object
    whose class defaults fill what the file leaves out); ValueError names what a dense decoder lacks."""
    return _module(root).model_dims(config, name)


def has_weights(folder: Path) -> bool:
    """A checkpoint folder (weights beside the config), not a bare config."""
    return folder.is_dir() and any(p.suffix in WEIGHT_SUFFIXES for p in folder.iterdir())


def load(root: Path, model: str) -> tuple[str, dict]:
    """(name, parsed config.json) of a model config."""
    path = resolve_config(root, model)
    try:
        return config_name(root, path), json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise WorkbenchError(f"{path} is not valid JSON ({err}): fix or replace it") from None
