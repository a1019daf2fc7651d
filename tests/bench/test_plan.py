"""bench.ab's plan: arm order, identical vLLM arguments for both arms, the flags each mode needs on the
releases the workbench supports, per-arm compile caches, A/A sessions, model folders made from configs."""

from __future__ import annotations

from pathlib import Path

import pytest

from workbench.bench import plan
from workbench.bench.session import kernels_digest, model_setup
from workbench.config import Settings
from workbench.errors import WorkbenchError
from workbench.runtime import Places, host_places

ROOT = Path(__file__).resolve().parents[2]
PLACES = Places(fork="/w/vllm", kernels="/w/custom_kernels", patches="/w/patches", results="/w/results",
                wheels="/w/wheels", guest="/opt/src/workbench/guest", state="/opt/workbench", hf_cache="/cache/hf",
                ccache="/cache/ccache")
HF = plan.ModelArgs("Qwen/Qwen2.5-0.5B")


def test_arm_order_is_abba_and_balanced():
    assert plan.arm_order(3) == ["baseline", "custom", "custom", "baseline", "baseline", "custom"]
    order = plan.arm_order(5)
    assert order.count("baseline") == order.count("custom") == 5


def test_both_arms_get_identical_vllm_arguments_and_only_the_switch_differs():
    spec = plan.BenchSpec(mode="both", repeats=2, extra=("--enforce-eager",))
    runs = plan.plan_runs(spec, "S", PLACES, HF, "python", kernels_digest(ROOT))
    assert [r.mode for r in runs] == ["latency"] * 4 + ["throughput"] * 4
    for mode in plan.MODES:
        mine = [r for r in runs if r.mode == mode]
        assert len({tuple(a for a in r.argv if not a.endswith(".json")) for r in mine}) == 1
        assert {r.env[plan.GEMM_SWITCH] for r in mine if r.arm == "custom"} == {"1"}
        assert {r.env[plan.GEMM_SWITCH] for r in mine if r.arm == "baseline"} == {"0"}
        assert len({r.output_json for r in mine}) == len(mine)
    lat = runs[0].argv
    assert lat[:5] == ("python", "-m", "vllm.entrypoints.cli.main", "bench", "latency")
    assert lat[lat.index("--num-iters") + 1] == "30" and lat[lat.index("--num-iters-warmup") + 1] == "5"
    assert lat[-2] == "--output-json" and lat[-1] == "/w/results/S/runs/latency-baseline-r0.json"
    thr = runs[4].argv
    # The random dataset's own length flags: since vLLM 0.2x they default to 1024/128 and win over --input-len.
    assert thr[thr.index("--random-input-len") + 1] == "128" and thr[thr.index("--random-output-len") + 1] == "128"
    assert "--input-len" not in thr and thr[thr.index("--dataset-name") + 1] == "random"
    cmd = runs[0].command()
    assert cmd[:2] == ["bash", "-c"] and "pipefail" in cmd[2]
    assert "PYTHONPATH=/opt/src/workbench/guest/hook${PYTHONPATH:+:$PYTHONPATH}" in cmd[2]
    assert "tee /w/results/S/runs/latency-baseline-r0.log" in cmd[2]


def test_each_arm_has_its_own_compile_cache_and_the_custom_one_follows_the_kernels():
    digest = kernels_digest(ROOT)
    runs = plan.plan_runs(plan.BenchSpec(repeats=1, gemm_layers="*.mlp.*"), "S", PLACES, HF, "python", digest)
    roots = {r.arm: r.env["VLLM_CACHE_ROOT"] for r in runs}
    assert roots == {"baseline": "/w/results/.vllm-cache/baseline",
                     "custom": f"/w/results/.vllm-cache/custom-{digest[:12]}"}
    assert {r.env[plan.LAYERS_ENV] for r in runs} == {"*.mlp.*"}
    off = plan.plan_runs(plan.BenchSpec(repeats=1, compile_cache="off"), "S", PLACES, HF, "python")
    assert all(r.env["VLLM_DISABLE_COMPILE_CACHE"] == "1" and "VLLM_CACHE_ROOT" not in r.env for r in off)


def test_kernels_digest_changes_with_the_package(tmp_path):
    pkg = tmp_path / "custom_kernels" / "src" / "custom_kernels"
    pkg.mkdir(parents=True)
    (pkg / "op.py").write_text("a = 1\n")
    first = kernels_digest(tmp_path)
    (pkg / "tables").mkdir()
    (pkg / "tables" / "t.json").write_text("{}")
    assert kernels_digest(tmp_path) != first


def test_an_aa_session_runs_the_baseline_in_both_arms():
    spec = plan.BenchSpec(aa=True, repeats=2)
    runs = plan.plan_runs(spec, "S", PLACES, HF, "python")
    assert {r.env[plan.GEMM_SWITCH] for r in runs} == {"0"}
    assert {r.arm for r in runs} == {"baseline", "custom"}  # two arms, the same code: the noise between them
    assert plan.session_name("Qwen/Qwen2.5-0.5B", now=0, aa=True) == "19700101-000000-Qwen2.5-0.5B-aa"


@pytest.mark.parametrize("change, message", [
    ({"mode": "fast"}, "--mode"), ({"repeats": 0}, "--repeats"), ({"extra": ("--seed", "3")}, "--seed"),
    ({"extra": ("--output-json=x",)}, "--output-json"), ({"compile_cache": "keep"}, "--compile-cache"),
    ({"extra": ("--random-input-len", "9")}, "--random-input-len"), ({"iters": 0}, "--iters"),
    ({"warmup_iters": -1}, "--warmup-iters"), ({"weights": "fp8"}, "--weights"),
    ({"extra": ("--load-format", "auto")}, "--load-format"),
])
def test_validate_spec_refuses_bad_input_with_the_fix(change, message):
    with pytest.raises(WorkbenchError, match=message):
        plan.validate_spec(plan.BenchSpec(**change))


def test_parse_extra_refuses_unbalanced_quotes():
    assert plan.parse_extra("--enforce-eager --max-model-len 2048") == ("--enforce-eager", "--max-model-len", "2048")
    with pytest.raises(WorkbenchError, match="quotes"):
        plan.parse_extra("--x 'open")


def test_session_name_and_slug():
    assert plan.model_slug("meta-llama/Meta-Llama-3-8B") == "Meta-Llama-3-8B"
    assert plan.model_slug("/models/my model/") == "my_model"
    assert plan.model_slug("configs/qwen/config.json") == "qwen"
    assert plan.session_name("Qwen/Qwen2.5-0.5B", now=0) == "19700101-000000-Qwen2.5-0.5B"


def test_env_capture_runs_the_guest_script_with_the_runtimes_paths():
    cmd = plan.env_capture_command(PLACES, "S", "python")
    assert cmd[:2] == ["python", "/opt/src/workbench/guest/bench_env.py"]
    assert cmd[cmd.index("--out") + 1] == "/w/results/S/env.json"
    assert cmd[cmd.index("--install-record") + 1] == "/opt/workbench/install.json"


# --- model folders --------------------------------------------------------------------------------

def test_a_shipped_config_becomes_a_model_folder_with_dummy_weights(tmp_path):
    setup = model_setup(ROOT, tmp_path, "/w/results", plan.BenchSpec(model="qwen2.5-0.5b"))
    assert setup.args == plan.ModelArgs("/w/results/.models/qwen2.5-0.5b-dummy", "dummy",
                                        "/w/results/.models/qwen2.5-0.5b-dummy/tokenizer")
    assert setup.folder_host == tmp_path / ".models" / "qwen2.5-0.5b-dummy"
    assert setup.config and setup.config.parent.name == "qwen2.5-0.5b"
    # An HF id with its real weights goes to vLLM as it is ...
    real = model_setup(ROOT, tmp_path, "/w/results", plan.BenchSpec(model="Qwen/Qwen2.5-0.5B"))
    assert real.args == plan.ModelArgs("Qwen/Qwen2.5-0.5B") and real.config is None
    # ... but asked for random (or dummy) weights, the shipped config of that name serves (one rule: models).
    hf = model_setup(ROOT, tmp_path, "/w/results", plan.BenchSpec(model="Qwen/Qwen2.5-0.5B", weights="random", seed=3))
    assert hf.args.model == "/w/results/.models/qwen2.5-0.5b-random-seed3" and hf.args.load_format is None
    assert hf.weights == "random"
    runs = plan.plan_runs(plan.BenchSpec(repeats=1), "S", PLACES, setup.args, "python")
    assert runs[0].argv[runs[0].argv.index("--load-format") + 1] == "dummy"
    assert runs[0].argv[runs[0].argv.index("--tokenizer") + 1] == "/w/results/.models/qwen2.5-0.5b-dummy/tokenizer"


def test_an_hf_id_or_a_checkpoint_goes_to_vllm_as_it_is(tmp_path):
    setup = model_setup(ROOT, tmp_path, "/w/results", plan.BenchSpec(model="org/unknown-model"))
    assert setup.args == plan.ModelArgs("org/unknown-model") and setup.config is None
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / "config.json").write_text("{}")
    (ckpt / "model.safetensors").write_bytes(b"x")
    assert model_setup(ROOT, tmp_path, "/w/results", plan.BenchSpec(model=str(ckpt))).args == plan.ModelArgs(str(ckpt))
    dummy = model_setup(ROOT, tmp_path, "/w/results", plan.BenchSpec(model="org/unknown-model", weights="dummy"))
    assert dummy.args == plan.ModelArgs("org/unknown-model", "dummy")
    with pytest.raises(WorkbenchError, match="--weights random needs a model config"):
        model_setup(ROOT, tmp_path, "/w/results", plan.BenchSpec(model="org/unknown-model", weights="random"))
    with pytest.raises(WorkbenchError, match="config without weights"):
        model_setup(ROOT, tmp_path, "/w/results", plan.BenchSpec(model="llama-3-8b", weights="real"))


def test_host_places_are_the_checkouts_folders(tmp_path):
    settings = Settings.from_mapping(ROOT, {"results": str(tmp_path / "r"), "python": "/opt/venv/bin/python"})
    places = host_places(settings, "/opt/venv/bin/python")
    assert places.results == str(tmp_path / "r") and places.fork == str(ROOT / "vllm")
    assert places.guest == str(ROOT / "workbench" / "guest")
    assert places.install_record == "/opt/venv/share/vllm-workbench/install.json"
