"""The three trace entry points end to end on CPU (HF backend, random weights), the kernel table from a real
CPU torch.profiler trace (same code path as CUDA), and the `invoke trace` command building."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from workbench.bench.kernels import import_custom_kernels  # noqa: E402
from workbench.errors import WorkbenchError  # noqa: E402
from workbench.trace.cli import main  # noqa: E402
from workbench.trace.command import TRACE_ENV, runtime_path, trace_command  # noqa: E402
from workbench.trace.kernel_map import KernelIndex  # noqa: E402
from workbench.trace.kernels import (  # noqa: E402
    device_samples,
    group_table,
    kernel_table,
    kernels_from_trace,
    load_chrome_events,
    profile_to_chrome_trace,
)
from workbench.trace.records import KernelStat, load_trace  # noqa: E402
from workbench.trace.targets import hf_model_from_config, swapped_linear_gemm  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
QWEN = {"model_type": "qwen2", "vocab_size": 97, "hidden_size": 48, "intermediate_size": 112,
        "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
        "max_position_embeddings": 128, "tie_word_embeddings": True}


@pytest.fixture()
def config_file(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps(QWEN))
    return path


def test_layers_end_to_end(config_file, tmp_path, capsys):
    out = tmp_path / "out"
    assert main("layers", ["--hf-config", str(config_file), "--max-tokens", "3", "--out", str(out),
                           "--custom-gemm"]) == 0
    printed = capsys.readouterr().out
    assert "custom GEMM on: 15 nn.Linear" in printed  # the swap keeps modules, so the counts hold
    assert "2 × layers + 1" in printed and "model.layers.0.self_attn.q_proj" in printed
    doc = load_trace(out / "layers.json")
    assert doc["steps"] == 3 and doc["layers"]["count"] == 2
    norm = next(o for o in doc["operators"] if o.type.endswith("RMSNorm"))
    assert norm.per_step == 2 * QWEN["num_hidden_layers"] + 1
    assert (out / "layers-report.txt").read_text().count("q_proj") >= 1
    # Printed again from the file alone.
    assert main("layers", ["--load", str(out / "layers.json")]) == 0
    assert "2 × layers + 1" in capsys.readouterr().out


def test_modules_filters_and_bad_type(config_file, tmp_path, capsys):
    out = tmp_path / "out"
    args = ["--hf-config", str(config_file), "--max-tokens", "2", "--out", str(out)]
    assert main("modules", [*args, "--module-type", "Linear", "--prefix", "layers.1."]) == 0
    doc = load_trace(out / "modules.json")
    assert {c.name.split(".")[-1] for c in doc["calls"]} == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj",
                                                              "up_proj", "down_proj"}
    assert all(c.name.startswith("model.layers.1.") for c in doc["calls"])
    assert doc["type_stats"][0].key == "Linear" and doc["type_stats"][0].calls == 7 * 2
    capsys.readouterr()
    assert main("modules", [*args, "--module-type", "NoSuchModule"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: no module calls match") and "Qwen2RMSNorm" in err and err.count("\n") == 1


def test_kernels_on_cpu_same_code_path(config_file, tmp_path, capsys):
    out = tmp_path / "out"
    custom = ROOT / "custom_kernels"
    assert main("kernels", ["--hf-config", str(config_file), "--max-tokens", "2", "--out", str(out),
                            "--custom-kernels", str(custom), "--fork", str(tmp_path / "no-fork")]) == 1
    assert "has no csrc/" in capsys.readouterr().err  # a wrong --fork is one line, nothing half-done
    assert main("kernels", ["--hf-config", str(config_file), "--max-tokens", "2", "--out", str(out),
                            "--custom-kernels", str(custom), "--top", "5", "--custom-gemm"]) == 0
    doc = load_trace(out / "kernels.json")
    assert doc["custom_gemm_layers"] == 7 * QWEN["num_hidden_layers"] + 1  # + lm_head (tied, still a Linear)
    rows: list[KernelStat] = doc["kernels"]
    assert doc["device"] == "cpu" and doc["profiler"] == "torch"
    names = {r.name for r in rows}
    assert names & {"aten::mm", "aten::addmm", "aten::linear"}
    assert {r.category for r in rows if r.name in ("aten::mm", "aten::addmm")} <= {"gemm"}
    assert abs(sum(r.percent for r in rows) - 100.0) < 1e-6
    assert {g.category for g in doc["groups"]} >= {"gemm"}
    assert len(load_chrome_events(out / "kernels-trace.json")) > 0


def test_cpu_self_time_excludes_children(tmp_path):
    model = hf_model_from_config(QWEN)
    ids = torch.randint(0, QWEN["vocab_size"], (1, 5))
    trace = profile_to_chrome_trace(lambda: model(ids), tmp_path / "t.json", cuda=False)
    events = load_chrome_events(trace)
    samples = device_samples(events, "cpu")
    total_self = sum(d for _, d in samples)
    top_level = sum(float(e["dur"]) for e in events if e.get("cat") == "cpu_op" and e["name"] == "aten::linear")
    linear_self = sum(d for n, d in samples if n == "aten::linear")
    assert linear_self < top_level  # addmm/mm time moved to the children
    wall = max(float(e["ts"]) + float(e["dur"]) for e in events) - min(float(e["ts"]) for e in events)
    assert 0 < total_self <= wall * 1.01


def test_cuda_events_table_from_a_chrome_trace(tmp_path):
    """Kernel rows from CUDA events (cat kernel / gpu_memcpy): the parser the GPU path uses."""
    trace = {"traceEvents": [
        {"ph": "X", "cat": "kernel", "name": "nvjet_tst_64x8_64x16_4x1_v_bz_TNT", "ts": 0, "dur": 10.0},
        {"ph": "X", "cat": "kernel", "name": "nvjet_tst_64x8_64x16_4x1_v_bz_TNT", "ts": 20, "dur": 14.0},
        {"ph": "X", "cat": "gpu_memcpy", "name": "Memcpy HtoD (Pageable -> Device)", "ts": 40, "dur": 1.0},
        {"ph": "X", "cat": "cpu_op", "name": "aten::mm", "ts": 0, "dur": 50.0},
        {"ph": "i", "cat": "kernel", "name": "ignored instant", "ts": 1},
    ]}
    path = tmp_path / "trace.json"
    path.write_text(json.dumps(trace))
    rows, groups = kernels_from_trace([path], KernelIndex(), "cuda")
    assert [(r.name[:9], r.calls, r.total_time_us, r.avg_time_us, r.origin) for r in rows] == [
        ("nvjet_tst", 2, 24.0, 12.0, "cublas"), ("Memcpy Ht", 1, 1.0, 1.0, "cuda-runtime")]
    assert [(g.category, g.origin, g.calls) for g in groups] == [("gemm", "cublas", 2), ("memory", "cuda-runtime", 1)]
    assert group_table(kernel_table([], None, "cuda")) == []


def test_swapped_linear_gemm_routes_and_restores():
    custom_kernels = import_custom_kernels(ROOT / "custom_kernels")
    model = hf_model_from_config(QWEN)
    ids = torch.randint(0, QWEN["vocab_size"], (1, 4))
    ref = model(ids).logits
    custom_kernels.CALL_COUNTS.clear()
    with swapped_linear_gemm(model, custom_kernels.unquantized_gemm) as n:
        got = model(ids).logits
    assert n == 7 * QWEN["num_hidden_layers"] + 1
    assert sum(custom_kernels.CALL_COUNTS.values()) == n
    torch.testing.assert_close(got, ref)
    model(ids)
    assert sum(custom_kernels.CALL_COUNTS.values()) == n  # restored: no more calls through the hook


def test_the_tracer_runs_as_a_module(config_file, tmp_path):
    """`python -m workbench.trace layers`: what invoke trace.layers runs where the runtime runs steps."""
    result = subprocess.run([sys.executable, "-m", "workbench.trace", "layers", "--hf-config", str(config_file),
                             "--max-tokens", "1", "--out", str(tmp_path)],
                            capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "layers.json").exists()
    usage = subprocess.run([sys.executable, "-m", "workbench.trace", "nope"], capture_output=True, text=True, cwd=ROOT)
    assert usage.returncode == 1 and "usage: python -m workbench.trace {layers,modules,kernels}" in usage.stderr


# ------------------------------------------------------------------------------------------ invoke trace.*

def _container_paths():
    from workbench.config import Settings
    from workbench.container.compose import load_spec
    from workbench.container.places import MountMap

    return MountMap.of(load_spec(Settings.from_mapping(ROOT, {}), "none")).from_host


def test_trace_command_list():
    to_runtime = _container_paths()
    cmd = trace_command("kernels", ROOT, to_runtime, model="Qwen/Qwen2.5-0.5B-Instruct", prompt="Hi there",
                        max_tokens=4, top=10, extra="--profiler torch --no-enforce-eager")
    assert cmd == ["python", "-m", "workbench.trace", "kernels", "--model", "Qwen/Qwen2.5-0.5B-Instruct",
                   "--prompt", "Hi there", "--max-tokens", "4", "--top", "10", "--out", "/workspace/results/trace",
                   "--profiler", "torch", "--no-enforce-eager"]
    assert trace_command("kernels", ROOT, to_runtime, custom_gemm=True)[-1] == "--custom-gemm"
    assert trace_command("layers", ROOT, to_runtime) == ["python", "-m", "workbench.trace", "layers", "--out",
                                                         "/workspace/results/trace"]
    assert TRACE_ENV["VLLM_ENABLE_V1_MULTIPROCESSING"] == "0"


def test_trace_command_paths_and_errors():
    to_runtime = _container_paths()
    assert runtime_path(ROOT, "scripts/configs/qwen2-tiny.json", to_runtime) == \
        "/workspace/scripts/configs/qwen2-tiny.json"
    assert runtime_path(ROOT, str(ROOT / "results" / "x"), to_runtime) == "/workspace/results/x"
    for bad in ("/etc/passwd", "docs/tracing.md"):
        with pytest.raises(WorkbenchError, match="not visible where the trace runs"):
            runtime_path(ROOT, bad, to_runtime)
    with pytest.raises(WorkbenchError, match="at least 1"):
        trace_command("layers", ROOT, to_runtime, max_tokens=0)
    with pytest.raises(WorkbenchError, match="quotes"):
        trace_command("layers", ROOT, to_runtime, extra="--prefix 'x")


def test_invoke_trace_dry_run(capsys):
    from invoke import Config, Context

    from workbench.tasks import collection

    # The task as invoke gets it: through the collection, which puts every body behind the error wrapper.
    layers = collection(ROOT).collections["trace"].tasks["layers"]
    ctx = Context(Config(overrides={"workbench": {"root": str(ROOT)}}))
    layers(ctx, max_tokens="2", hf_config="scripts/configs/qwen2-tiny.json", dry_run=True)
    # Flags arrive as text (invoke's int() cast would end in a traceback on "abc"); workbench.flags parses them.
    # On a copy: invoke's get_arguments consumes the task's help dict, which other tests read after this one.
    spare = copy.copy(layers)
    spare.help = dict(layers.help)
    assert {a.name: a.kind for a in spare.get_arguments()}["max_tokens"] is str
    out = capsys.readouterr().out
    assert out.strip() == ("on dev container vllm-workbench: + python -m workbench.trace layers --hf-config "
                           "/workspace/scripts/configs/qwen2-tiny.json --max-tokens 2 --top 20 "
                           "--out /workspace/results/trace")
    layers(ctx, dry_run=True, runtime="host")
    assert f"--out {ROOT / 'results' / 'trace'}" in capsys.readouterr().out
    from invoke.exceptions import Exit

    with pytest.raises(Exit, match="--max-tokens 'two' is not a whole number"):
        layers(ctx, max_tokens="two", dry_run=True)


def test_host_side_imports_need_no_torch():
    """invoke trace runs on the host: importing its modules must not pull in torch or transformers."""
    code = ("import sys, workbench.tasks.trace, workbench.trace.command, workbench.trace, workbench.runtime; "
            "print(sorted(m for m in ('torch', 'transformers', 'rich.console') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert result.stdout.strip() == "[]"
