"""gpu tier: the CUDA kernel profile of a small random-weight HF model (no vLLM needed), with the custom GEMM
off (nn.Linear -> cuBLAS) and on (custom_kernels.unquantized_gemm swapped into every nn.Linear forward).

Needs only torch + transformers on the GPU host. Set WORKBENCH_TRACE_GPU_OUT to keep the kernel tables
(JSON) for the docs; WORKBENCH_FORK to map vLLM kernels too (not needed: this model runs none).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

pytestmark = pytest.mark.gpu

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from workbench.bench.kernels import import_custom_kernels  # noqa: E402
from workbench.trace.kernel_map import build_index  # noqa: E402
from workbench.trace.kernels import kernels_from_trace, profile_to_chrome_trace  # noqa: E402
from workbench.trace.modules import ModuleTracer  # noqa: E402
from workbench.trace.records import save_trace  # noqa: E402
from workbench.trace.source_scan import ORIGIN_CUSTOM  # noqa: E402
from workbench.trace.targets import (  # noqa: E402
    greedy_generate,
    hf_model_from_config,
    swapped_linear_gemm,
)

ROOT = Path(__file__).resolve().parents[2]
CONFIG = {"model_type": "qwen2", "vocab_size": 4096, "hidden_size": 512, "intermediate_size": 1408,
          "num_hidden_layers": 4, "num_attention_heads": 8, "num_key_value_heads": 2,
          "max_position_embeddings": 1024, "tie_word_embeddings": False}
TOKENS = 4
LINEARS_PER_STEP = 7 * CONFIG["num_hidden_layers"] + 1


@pytest.fixture(scope="module")
def setup():
    fork = os.environ.get("WORKBENCH_FORK")
    index = build_index(Path(fork) if fork else None, custom=ROOT / "custom_kernels")
    model = hf_model_from_config(CONFIG, dtype=torch.bfloat16, device="cuda")
    ids = torch.randint(0, CONFIG["vocab_size"], (1, 64), device="cuda")
    return index, model, ids


def _profile(model, ids, index, path: Path, gemm=None):
    def run():
        if gemm is None:
            return greedy_generate(model, ids, TOKENS)
        with swapped_linear_gemm(model, gemm):
            return greedy_generate(model, ids, TOKENS)

    run()  # warm-up: cuBLAS handles, Triton compilation and autotuning stay out of the profile
    trace = profile_to_chrome_trace(run, path, cuda=True)
    return kernels_from_trace([trace], index, "cuda")


def _keep(name: str, payload: dict) -> None:
    out = os.environ.get("WORKBENCH_TRACE_GPU_OUT")
    if out:
        save_trace(Path(out) / f"{name}.json", "kernels", payload)


def test_kernel_profile_custom_gemm_off_and_on(setup, tmp_path):
    index, model, ids = setup
    ck = import_custom_kernels(ROOT / "custom_kernels")

    rows_off, groups_off = _profile(model, ids, index, tmp_path / "off.json")
    _keep("gpu-kernels-custom-off", {"device": "cuda", "profiler": "torch", "kernels": rows_off,
                                     "groups": groups_off, "model": "Qwen2 4L h512 bf16 random", "custom_gemm": False})
    gemm_off = [r for r in rows_off if r.category == "gemm"]
    assert gemm_off, [r.name for r in rows_off]
    assert all(r.origin != "unknown" for r in gemm_off), [r.name for r in gemm_off if r.origin == "unknown"]
    assert "cublas" in {r.origin for r in gemm_off}
    # Library kernels never get a file; nothing of this model comes from vLLM's csrc/.
    assert all(r.source_file is None for r in rows_off if r.origin not in (ORIGIN_CUSTOM,))
    gemm_calls_off = sum(r.calls for r in gemm_off if r.origin == "cublas")
    assert gemm_calls_off >= LINEARS_PER_STEP * TOKENS

    ck.CALL_COUNTS.clear()
    routed = []

    def gemm(layer, x, weight, bias=None):
        routed.append(1)
        return ck.unquantized_gemm(layer, x, weight, bias)

    # The tuned table sends this toy model's shapes (not in it) to cuBLAS - correct dispatch, but then no
    # custom kernel runs (seen on an H200). Force one so the profile must show it, mapped to its file.
    os.environ["CUSTOM_KERNELS_FORCE"] = "triton_splitk"
    try:
        rows_on, groups_on = _profile(model, ids, index, tmp_path / "on.json", gemm=gemm)
    finally:
        os.environ.pop("CUSTOM_KERNELS_FORCE", None)
    _keep("gpu-kernels-custom-on", {"device": "cuda", "profiler": "torch", "kernels": rows_on,
                                    "groups": groups_on, "model": "Qwen2 4L h512 bf16 random", "custom_gemm": True})
    # Every linear of every step (warm-up + profiled run) went through the contract, and it counted itself.
    assert len(routed) == 2 * LINEARS_PER_STEP * TOKENS
    assert sum(ck.CALL_COUNTS.values()) > 0
    custom_sources = [d for d in index.decls if d.origin == ORIGIN_CUSTOM]
    custom_rows = [r for r in rows_on if r.origin == ORIGIN_CUSTOM]
    if custom_sources:
        # custom_kernels ships kernels: they must show up, by name, mapped to their file.
        assert custom_rows, f"no custom kernel in the profile; scanned: {[d.name for d in custom_sources]}"
        assert all(r.source_file and r.source_file.startswith("custom_kernels/") for r in custom_rows)
        cublas_on = sum(r.calls for r in rows_on if r.category == "gemm" and r.origin == "cublas")
        assert cublas_on < gemm_calls_off
    else:
        # The placeholder contract body calls F.linear: the same cuBLAS kernels, and the table says so.
        assert {r.name for r in rows_on if r.category == "gemm"} == {r.name for r in gemm_off}


def test_cuda_timing_fills_cuda_time(setup):
    _, model, ids = setup
    with ModuleTracer(model, cuda_timing=True) as tracer:
        greedy_generate(model, ids, 2)
    linears = [c for c in tracer.calls if c.type == "Linear"]
    assert linears and all(c.cuda_time_us is not None and c.cuda_time_us > 0 for c in linears)


def test_kernels_cli_on_gpu(tmp_path):
    pytest.importorskip("rich")
    from workbench.trace.cli import main
    from workbench.trace.records import load_trace

    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps(CONFIG))
    out = tmp_path / "out"
    assert main("kernels", ["--hf-config", str(cfg), "--device", "cuda", "--max-tokens", "3", "--out", str(out),
                            "--custom-kernels", str(ROOT / "custom_kernels")]) == 0
    doc = load_trace(out / "kernels.json")
    assert doc["device"] == "cuda" and any(r.category == "gemm" for r in doc["kernels"])
    assert (out / "kernels-trace.json").stat().st_size > 0
