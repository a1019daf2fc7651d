"""The tune task and `bench --kernels`: the commands they run in the container, and their errors."""

from __future__ import annotations

from pathlib import Path

import pytest
from invoke import Config, Context

from workbench.errors import WorkbenchError
from workbench.kernels import bench_command, model_argument, shipped_models, tune_command

ROOT = Path(__file__).resolve().parents[1]


def test_shipped_models_are_found():
    assert shipped_models(ROOT) == ["llama-3-8b", "qwen2.5-0.5b", "tinyllama-1.1b"]


def test_tune_command_for_names_and_paths():
    path = ROOT / "custom_kernels" / "custom_kernels" / "configs" / "tinyllama-1.1b"
    cmd = tune_command(ROOT, ["llama-3-8b", str(path)], tp=2, buckets="1,16", kernels="triton_splitk")
    assert cmd == ["python3", "-m", "custom_kernels.tune", "--model", "llama-3-8b", "--model",
                   "/workspace/custom_kernels/custom_kernels/configs/tinyllama-1.1b/config.json",
                   "--tp", "2", "--dtype", "bfloat16", "--buckets", "1,16", "--kernels", "triton_splitk"]


def test_bench_command_defaults_to_all_models_with_plot():
    assert bench_command(ROOT, []) == ["python3", "-m", "custom_kernels.bench.gemm", "--tp", "1", "--dtype",
                                       "bfloat16", "--plot"]
    assert bench_command(ROOT, ["qwen2.5-0.5b"], m="1,64", plot=False)[-2:] == ["--m", "1,64"]


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"models": ["nope"]}, "no model config 'nope'"),
    ({"models": [], "tp": 0}, "--tp 0 is below 1: give a tensor-parallel size"),
    ({"models": [], "dtype": "float32"}, "choose one of bfloat16, float16"),
])
def test_bad_arguments_say_the_fix(kwargs, message):
    with pytest.raises(WorkbenchError, match=message):
        tune_command(ROOT, **kwargs)


def test_config_outside_custom_kernels_is_refused(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(WorkbenchError, match="outside custom_kernels"):
        model_argument(ROOT, str(tmp_path), "/workspace/custom_kernels")


def test_tasks_dry_run_print_the_command(capsys):
    from workbench.tasks.bench import bench
    from workbench.tasks.kernels import tune

    ctx = Context(Config(overrides={"workbench": {"root": str(ROOT)}}))
    tune(ctx, model=["qwen2.5-0.5b"], tp=1, dry_run=True)
    bench(ctx, kernels=True, dry_run=True)
    out = capsys.readouterr().out
    assert "(dry run) in the container: python3 -m custom_kernels.tune --model qwen2.5-0.5b" in out
    assert "python3 -m custom_kernels.bench.gemm --tp 1 --dtype bfloat16 --plot" in out
