"""kernels.tune and kernels.bench: the commands they run through the runtime, and their errors."""

from __future__ import annotations

from pathlib import Path

import pytest
from invoke import Config, Context

from workbench import models
from workbench.bench.kernels import bench_command, model_argument, tune_command
from workbench.errors import WorkbenchError

ROOT = Path(__file__).resolve().parents[2]


def test_shipped_models_are_found_by_the_one_resolver():
    assert models.shipped(ROOT) == ["llama-3-70b", "llama-3-8b", "qwen2.5-0.5b", "tinyllama-1.1b"]
    assert models.resolve_config(ROOT, "Qwen/Qwen2.5-0.5B").parent.name == "qwen2.5-0.5b"  # an HF id's last part
    assert models.resolve_config(ROOT, "TinyLlama-1.1B").parent.name == "tinyllama-1.1b"  # case-insensitive
    with pytest.raises(WorkbenchError, match=r"no model config .nope.: .*llama-3-8b"):
        models.resolve_config(ROOT, "nope")


def test_tune_command_for_names_and_paths(tmp_path):
    path = ROOT / "custom_kernels" / "src" / "custom_kernels" / "configs" / "tinyllama-1.1b"
    cmd = tune_command(ROOT, ["llama-3-8b", str(path)], tp=2, buckets="1,16", kernels="triton_splitk",
                       python="python", kernels_root="/workspace/custom_kernels")
    assert cmd == ["python", "-m", "custom_kernels.tune", "--model", "llama-3-8b", "--model", "tinyllama-1.1b",
                   "--tp", "2", "--dtype", "bfloat16", "--buckets", "1,16", "--kernels", "triton_splitk"]
    mine = ROOT / "custom_kernels" / "my-configs" / "x" / "config.json"  # a config of the user's, not shipped
    mine.parent.mkdir(parents=True)
    try:
        mine.write_text("{}")
        assert model_argument(ROOT, str(mine), "/workspace/custom_kernels") == \
            "/workspace/custom_kernels/my-configs/x/config.json"
    finally:
        import shutil

        shutil.rmtree(ROOT / "custom_kernels" / "my-configs")


def test_tune_command_takes_a_list_of_tp_sizes():
    """One command tunes several TP sizes: the shipped set (no --model) at each, or the named models."""
    assert tune_command(ROOT, [], tp=[2])[-4:] == ["--tp", "2", "--dtype", "bfloat16"]
    cmd = tune_command(ROOT, ["llama-3-70b"], tp=[4, 8])
    assert cmd[3:] == ["--model", "llama-3-70b", "--tp", "4,8", "--dtype", "bfloat16"]


def test_bench_command_defaults_to_all_models_with_plot():
    assert bench_command(ROOT, []) == ["python3", "-m", "custom_kernels.bench.gemm", "--tp", "1", "--dtype",
                                       "bfloat16", "--plot"]
    assert bench_command(ROOT, ["qwen2.5-0.5b"], m="1,64", plot=False)[-2:] == ["--m", "1,64"]


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"models": ["nope"]}, "no model config 'nope'"),
    ({"models": [], "tp": 0}, "--tp 0 is below 1: give a tensor-parallel size"),
    ({"models": [], "dtype": "float32"}, "choose one of bfloat16, float16"),
    # vLLM's divide() would assert in every rank: the fix names the sizes this model splits into
    ({"models": ["qwen2.5-0.5b"], "tp": [2, 4]}, r"--tp 4 does not divide the 14 attention heads of qwen2.5-0.5b: "
                                                r"use one of 1, 2$"),
    ({"models": ["llama-3-70b"], "tp": 3}, r"--tp 3 must divide \(or be a multiple of\) the 8 KV heads of llama-3-70b"),
])
def test_bad_arguments_say_the_fix(kwargs, message):
    with pytest.raises(WorkbenchError, match=message):
        tune_command(ROOT, **kwargs)


def test_config_outside_custom_kernels_is_refused(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(WorkbenchError, match="outside custom_kernels"):
        model_argument(ROOT, str(tmp_path), "/workspace/custom_kernels")


def test_tasks_dry_run_print_the_command(capsys):
    from workbench.tasks.kernels import bench, tune

    ctx = Context(Config(overrides={"workbench": {"root": str(ROOT)}}))
    tune(ctx, model=["qwen2.5-0.5b"], tp=1, dry_run=True)
    bench(ctx, dry_run=True)
    bench(ctx, dry_run=True, runtime="host")
    out = capsys.readouterr().out
    assert "(dry run) on dev container vllm-workbench: python -m custom_kernels.tune --model qwen2.5-0.5b" in out
    assert "python -m custom_kernels.bench.gemm --tp 1 --dtype bfloat16 --plot" in out
    assert "(dry run) on this host (" in out
