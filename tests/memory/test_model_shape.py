"""plan-memory reads a model through the kernels package's shape rules (custom_kernels/src/custom_kernels/models.py,
via workbench.models): the same dimensions from transformers' config object as from the raw file, and the
parameter count of transformers' own model. The rules against vLLM itself: tests/kernels/test_model_shapes.py."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from tests.support.model_configs import SHAPE_CONFIGS, transformers_model, write_shape_configs
from workbench import models
from workbench.memory import model_shape

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def config_files(tmp_path_factory) -> dict[str, Path]:
    return write_shape_configs(tmp_path_factory.mktemp("shape-configs"))


def test_qwen2_with_attention_bias_false_still_counts_its_qkv_biases(config_files):
    path = config_files["qwen2-attention-bias-false"]
    planned = model_shape.load_model_shape(str(path))
    assert planned.dims.qkv_bias and not planned.dims.o_proj_bias
    without = dataclasses.replace(planned, dims=dataclasses.replace(planned.dims, qkv_bias=False))
    assert planned.parameters - without.parameters == 4 * 16 + 2 * 2 * 16  # q, k, v biases of the one layer


@pytest.mark.parametrize("name", SHAPE_CONFIGS)
def test_plan_memory_reads_the_dimensions_the_kernels_package_does(config_files, name):
    """One rule, two inputs: the raw file (as the kernels package reads it) and transformers' config object
    with its class's defaults (as plan-memory reads it) give the same dimensions."""
    path = config_files[name]
    planned = model_shape.load_model_shape(str(path))
    raw = models.model_dims(ROOT, json.loads(path.read_text()), name)
    assert dataclasses.asdict(planned.dims) == dataclasses.asdict(raw)


@pytest.mark.parametrize("name", [n for n, (_, same) in SHAPE_CONFIGS.items() if same])
def test_parameter_count_is_the_transformers_models(config_files, name):
    expected = sum(p.numel() for p in transformers_model(name).parameters())
    assert model_shape.load_model_shape(str(config_files[name])).parameters == expected
