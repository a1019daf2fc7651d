"""Dispatch table, M buckets, model shapes and the tuner's winner rule (pure logic, CPU)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from custom_kernels import dispatch
from custom_kernels.dispatch import BUCKETS, Choice, DispatchTable, bucket_for, read_table, shape_key, write_table
from custom_kernels.gemm.candidates import CANDIDATES, splitk_space, tma_space
from custom_kernels.models import available_models, linear_shapes, load_config, model_dims, resolve_config
from custom_kernels.tune import VLLM_MEMORY_SHARE, Measured, bench_gpu, confirm, main, make_entry, rank_gemm_bytes


@pytest.mark.parametrize(("m", "bucket"), [(1, 1), (3, 4), (17, 32), (64, 64), (333, 512), (8192, 8192), (9000, 8192)])
def test_bucket_is_smallest_tuned_at_least_m(m, bucket):
    assert bucket_for(m) == bucket


def test_lookup_uses_the_bucket_winner_and_cublas_elsewhere():
    table = DispatchTable()
    cfg = {"BLOCK_N": 64, "SPLIT_K": 4}
    table.set_entries("GPU X", "bfloat16", {shape_key(4096, 4096): {
        "1": {"kernel": "triton_splitk", "config": cfg}, "16": {"kernel": "cublas", "config": None},
        "1024": {"kernel": "triton_tma", "config": {}}}}, {"created": "now"})
    assert table.lookup("GPU X", "bfloat16", 4096, 4096, 1) == Choice("triton_splitk", cfg)
    assert table.lookup("GPU X", "bfloat16", 4096, 4096, 9).kernel == "cublas"  # bucket 16 says cuBLAS
    assert table.lookup("GPU X", "bfloat16", 4096, 4096, 333).kernel == "triton_tma"  # smallest tuned >= 333
    assert table.lookup("GPU X", "bfloat16", 4096, 4096, 5000).kernel == "triton_tma"  # beyond: largest
    assert table.lookup("GPU X", "float16", 4096, 4096, 1).kernel == "cublas"  # other dtype: untuned
    assert table.lookup("GPU Y", "bfloat16", 4096, 4096, 1).kernel == "cublas"  # other GPU
    assert table.lookup("GPU X", "bfloat16", 4096, 1024, 1).kernel == "cublas"  # other shape


def test_a_shape_routes_only_where_some_bucket_has_a_non_cublas_winner():
    table = DispatchTable()
    table.set_entries("GPU X", "bfloat16", {
        shape_key(4096, 4096): {"1": {"kernel": "triton_splitk", "config": {}}, "16": {"kernel": "cublas"}},
        shape_key(1024, 4096): {"1": {"kernel": "cublas"}, "1024": {"kernel": "cublas"}}}, {})
    assert table.routes_any("GPU X", "bfloat16", 4096, 4096)
    assert not table.routes_any("GPU X", "bfloat16", 1024, 4096)  # cuBLAS at every bucket
    assert not table.routes_any("GPU X", "bfloat16", 512, 512)  # a shape the table doesn't know
    assert not table.routes_any("GPU Y", "bfloat16", 4096, 4096)  # another GPU


def test_route_decision_says_why(monkeypatch):
    import custom_kernels as ck

    w = torch.randn(8, 16)
    assert ck.route_decision(w) == (False, "cpu/float32: F.linear is the only path")
    monkeypatch.setenv("CUSTOM_KERNELS_FORCE", "triton_splitk")
    assert ck.route_decision(w) == (True, "forced kernel triton_splitk")
    monkeypatch.setenv("CUSTOM_KERNELS_DISABLE", "1")
    assert ck.route_decision(w) == (False, "CUSTOM_KERNELS_DISABLE is set")


def test_table_round_trip_merges_and_rejects_other_schemas(tmp_path):
    path = tmp_path / "t.json"
    first = DispatchTable()
    first.set_entries("A", "bfloat16", {"8x8": {"1": {"kernel": "cublas"}}}, {})
    write_table(first, path)
    second = read_table(path)
    second.set_entries("B", "float16", {"8x8": {"1": {"kernel": "triton_splitk", "config": {}}}}, {})
    write_table(second, path)
    merged = read_table(path)
    assert set(merged.gpus) == {"A", "B"}
    assert read_table(tmp_path / "missing.json").gpus == {}
    path.write_text(json.dumps({"schema": 99, "gpus": {}}))
    with pytest.raises(ValueError, match="re-run tune"):
        read_table(path)


def test_winner_needs_the_margin_and_best_triton_is_kept():
    cublas = Measured("cublas", None, 10.0, 9.9, 10.1)
    close = [Measured("triton_splitk", {"SPLIT_K": 2}, 9.8, 9.7, 9.9)]
    entry = make_entry(cublas, close, margin=1.03)
    assert entry["kernel"] == "cublas" and entry["best_triton"]["ratio"] == pytest.approx(10 / 9.8, rel=1e-3)
    clear = [Measured("cublaslt", {"algo": 1}, 9.0, 8.9, 9.1), *close]
    entry = make_entry(cublas, clear, margin=1.03)
    assert entry["kernel"] == "cublaslt" and entry["speedup"] == pytest.approx(10 / 9.0, rel=1e-3)
    assert entry["best_cublaslt"]["config"] == {"algo": 1}


def test_one_table_file_per_gpu_read_on_its_first_lookup(monkeypatch):
    files = sorted(dispatch.TABLES_DIR.glob("*.json"))
    assert [f.stem for f in files] == ["nvidia-h100-80gb-hbm3", "nvidia-h200"]
    for f in files:
        (gpu,) = read_table(f).gpus  # exactly one GPU per file, named by its slug
        assert dispatch.gpu_slug(gpu) == f.stem and dispatch.table_path(gpu) == f
    monkeypatch.delenv("CUSTOM_KERNELS_TABLE", raising=False)
    tables = dispatch.reload_table()
    assert tables.gpus == {}  # nothing read before a lookup
    shipped = read_table(dispatch.TABLES_DIR / "nvidia-h200.json")
    key, buckets = next((k, b) for k, b in shipped.gpus["NVIDIA H200"]["bfloat16"]["shapes"].items()
                        if any(e["kernel"] != "cublas" for e in b.values()))
    bucket, entry = next((int(m), e) for m, e in buckets.items() if e["kernel"] != "cublas")
    n, k = map(int, key.split("x"))
    assert tables.lookup("NVIDIA H200", "bfloat16", n, k, bucket).kernel == entry["kernel"]
    assert list(tables.gpus) == ["NVIDIA H200"]  # only that GPU's file was read
    assert tables.lookup("NVIDIA B200", "bfloat16", n, k, bucket) == dispatch.CUBLAS  # no file: cuBLAS
    dispatch.reload_table()


@pytest.mark.parametrize("path", sorted(dispatch.TABLES_DIR.glob("*.json")), ids=lambda p: p.stem)
def test_shipped_table_is_valid_and_covers_the_shipped_models(path):
    """Every (model, TP) a table says it tuned has all its shapes; every shipped model whose weights fit one
    80 GB GPU is tuned at TP=1 (a 70B-class config runs split, so its entries are those of its TP sizes)."""
    table = read_table(path)
    assert table.gpus, "the tuned table ships with at least one GPU"
    for gpu, per_dtype in table.gpus.items():
        for dtype, slot in per_dtype.items():
            assert dtype in ("bfloat16", "float16")
            shapes = slot["shapes"]
            coverage = table.coverage(gpu, dtype)
            single_gpu = [m for m in available_models() if rank_gemm_bytes(m, 1) < VLLM_MEMORY_SHARE * 80e9]
            assert set(single_gpu) <= set(coverage.get("1", [])), f"{gpu}/{dtype}: untuned at TP=1"
            for tp, tuned in coverage.items():
                for model in tuned:
                    for s in linear_shapes(model, tp=int(tp)):
                        assert shape_key(s.n, s.k) in shapes, f"{gpu}/{dtype}: {model} TP={tp} {s.layer} untuned"
            for key, buckets in shapes.items():
                for bucket, entry in buckets.items():
                    assert int(bucket) in BUCKETS
                    assert entry["kernel"] in CANDIDATES, f"{key}@{bucket}: unknown {entry['kernel']}"
                    if entry["kernel"] != "cublas":
                        assert entry["speedup"] >= slot["meta"]["margin"]


def test_tp_entries_merge_beside_the_tp1_ones_and_coverage_grows():
    """A TP=2 tune adds the rank shapes to the same slot (keyed by shape) and records the TP it covered; the
    dispatcher then finds a rank's GEMM by its shape, as it finds any other."""
    table = DispatchTable()
    entry = {"kernel": "cublas", "config": None}
    tp1 = {shape_key(s.n, s.k): {"1": entry} for s in linear_shapes("llama-3-8b")}
    table.set_entries("GPU X", "bfloat16", tp1, {"models": ["llama-3-8b"], "tp": 1, "margin": 1.03})
    won = {"kernel": "triton_splitk", "config": {}}
    tp2 = {shape_key(s.n, s.k): {"1": won} for s in linear_shapes("llama-3-8b", 2)}
    table.set_entries("GPU X", "bfloat16", tp2, {"models": ["llama-3-8b"], "tp": 2, "margin": 1.03})
    assert table.coverage("GPU X", "bfloat16") == {"1": ["llama-3-8b"], "2": ["llama-3-8b"]}
    shapes = table.gpus["GPU X"]["bfloat16"]["shapes"]
    assert len(shapes) == len(tp1.keys() | tp2.keys())  # o_proj's K and the others' N halve: new keys
    assert table.lookup("GPU X", "bfloat16", 14336, 4096, 1).kernel == "triton_splitk"  # gate_up_proj on a rank
    assert table.lookup("GPU X", "bfloat16", 28672, 4096, 1).kernel == "cublas"  # the whole gate_up_proj
    # an old table (no coverage key) states its coverage through its last tune's meta
    old = DispatchTable(gpus={"G": {"bfloat16": {"meta": {"models": ["a", "b"], "tp": 1}, "shapes": {}}}})
    assert old.coverage("G", "bfloat16") == {"1": ["a", "b"]}
    old.set_entries("G", "bfloat16", {}, {"models": ["c"], "tp": 4})
    assert old.coverage("G", "bfloat16") == {"1": ["a", "b"], "4": ["c"]}


def test_tp_plan_drops_unsplittable_shipped_models_and_refuses_named_ones():
    from custom_kernels.tune import tp_plan

    plan = {tp: (models, skipped) for tp, models, skipped in tp_plan(None, "2,4,8")}
    assert plan[2][0] == available_models()  # every shipped config splits two ways
    assert "qwen2.5-0.5b" not in plan[4][0] and plan[4][1] == [
        "qwen2.5-0.5b: tensor-parallel size 4 does not divide the 14 attention heads"]
    assert "llama-3-70b" in plan[8][0] and "tinyllama-1.1b" in plan[8][0]  # 4 KV heads replicated twice
    with pytest.raises(ValueError, match=r"pick one of 1, 2$"):
        tp_plan(["qwen2.5-0.5b"], "4")
    # on an H200 (139.8 GiB), the shipped set at TP=1 leaves out what no engine there could load
    h200 = int(139.8 * 2**30)
    (_, chosen, skipped), (_, at4, _) = tp_plan(None, "1,4", h200)
    assert "llama-3-70b" not in chosen and "llama-3-8b" in chosen and "llama-3-70b" in at4
    assert skipped == ["llama-3-70b: one rank's weights (129.5 GiB) exceed 90% of this GPU's 139.8 GiB at TP=1; "
                       "name it with --model to tune it anyway"]
    assert tp_plan(["llama-3-70b"], "1", h200)[0][1] == ["llama-3-70b"]  # named: tuned
    with pytest.raises(ValueError, match="comma-separated list"):
        tp_plan(None, "two")


def test_llama_3_70b_shapes_per_rank():
    """The shipped 70B config (meta-llama/Meta-Llama-3-70B) at the TP sizes it is deployed at."""
    name, cfg = load_config("llama-3-70b")
    dims = model_dims(cfg, name)
    assert (dims.hidden_size, dims.intermediate_size, dims.num_layers, dims.num_heads, dims.num_kv_heads,
            dims.head_dim, dims.vocab_size) == (8192, 28672, 80, 64, 8, 128, 128256)
    want = {1: {"qkv_proj": (10240, 8192), "o_proj": (8192, 8192), "gate_up_proj": (57344, 8192),
                "down_proj": (8192, 28672), "lm_head": (128256, 8192)},
            4: {"qkv_proj": (2048 + 2 * 256, 8192), "o_proj": (8192, 2048), "gate_up_proj": (14336, 8192),
                "down_proj": (8192, 7168), "lm_head": (32064, 8192)},
            8: {"qkv_proj": (1024 + 2 * 128, 8192), "o_proj": (8192, 1024), "gate_up_proj": (7168, 8192),
                "down_proj": (8192, 3584), "lm_head": (16032, 8192)}}
    for tp, shapes in want.items():
        assert {s.layer: (s.n, s.k) for s in linear_shapes("llama-3-70b", tp)} == shapes
    assert dims.tp_choices(16) == [1, 2, 4, 8, 16]
    assert rank_gemm_bytes("llama-3-70b", 1) > 139.8 * 2**30 * 0.9 > rank_gemm_bytes("llama-3-70b", 4)  # split


def test_model_shapes_follow_vllm_fusion_and_tensor_parallelism():
    llama = {s.layer: (s.n, s.k) for s in linear_shapes("llama-3-8b")}
    assert llama == {"qkv_proj": (6144, 4096), "o_proj": (4096, 4096), "gate_up_proj": (28672, 4096),
                     "down_proj": (4096, 14336), "lm_head": (128256, 4096)}
    tp8 = {s.layer: (s.n, s.k) for s in linear_shapes("llama-3-8b", tp=8)}
    assert tp8["qkv_proj"] == (512 + 2 * 128, 4096)  # 8 KV heads over 8 ranks: one each
    assert tp8["down_proj"] == (4096, 1792) and tp8["lm_head"] == (16032, 4096)
    qwen = {s.layer: s for s in linear_shapes("qwen2.5-0.5b")}
    assert qwen["qkv_proj"].bias and (qwen["qkv_proj"].n, qwen["qkv_proj"].k) == (1152, 896)
    tiny16 = {s.layer: s.n for s in linear_shapes("tinyllama-1.1b", tp=16)}
    assert tiny16["qkv_proj"] == 2 * 64 + 2 * 64  # 4 KV heads replicated: one per rank
    unfused = [s.layer for s in linear_shapes("tinyllama-1.1b", fused=False)]
    assert unfused[:3] == ["q_proj", "k_proj", "v_proj"]


def test_bad_model_and_tp_say_what_to_do():
    with pytest.raises(FileNotFoundError, match="llama-3-8b"):
        resolve_config("no-such-model")
    with pytest.raises(ValueError, match=r"size 3 must divide .* the 2 KV heads; pick one of 1, 2$"):
        linear_shapes("qwen2.5-0.5b", tp=3)
    with pytest.raises(ValueError, match=r"size 4 does not divide the 14 attention heads"):
        linear_shapes("qwen2.5-0.5b", tp=4)  # 4 is a multiple of the 2 KV heads, but 14 heads don't split


def test_tuning_spaces_fit_shared_memory_and_cover_the_ranges():
    for m in (1, 16, 64):
        space = splitk_space(m, 4096, 4096)
        assert space and all((c["BLOCK_M"] + c["BLOCK_N"]) * c["BLOCK_K"] * 2 * c["num_stages"] <= 225 * 1024
                              for c in space)
    assert splitk_space(128, 4096, 14336)  # few output tiles, long K: split-K offered
    assert not splitk_space(4096, 4096, 4096)
    assert not tma_space(16, 4096, 4096) and all(c["BLOCK_M"] <= 64 for c in tma_space(64, 4096, 4096))


def test_env_force_and_disable(monkeypatch):
    import custom_kernels as ck

    x, w = torch.randn(2, 16), torch.randn(8, 16)
    monkeypatch.setenv("CUSTOM_KERNELS_FORCE", "cublas")
    assert ck.select_kernel(x, w, None).kernel == "cublas"
    monkeypatch.setenv("CUSTOM_KERNELS_FORCE", "bogus")
    with pytest.raises(ValueError, match="choose one of"):
        ck.select_kernel(x, w, None)
    monkeypatch.setenv("CUSTOM_KERNELS_DISABLE", "1")
    assert ck.select_kernel(x, w, None).kernel == "cublas"


def test_device_counts_are_empty_when_off():
    import custom_kernels as ck

    ck.reset_counts()
    assert ck.device_call_counts() == {}


def test_tables_tuned_side_by_side_merge_into_one(tmp_path, capsys):
    """Two tunes at once, one per GPU of a 2-GPU host, each into its own file; --merge joins them (no GPU)."""
    from custom_kernels.tune import main

    a, b, into = DispatchTable(), DispatchTable(), tmp_path / "into.json"
    a.set_entries("GPU X", "bfloat16", {"14336x4096": {"1": {"kernel": "cublas"}}}, {"models": ["llama-3-8b"], "tp": 2})
    b.set_entries("GPU X", "bfloat16", {"8192x3584": {"1": {"kernel": "cublas"}}},
                  {"models": ["llama-3-70b"], "tp": 8})
    write_table(a, tmp_path / "a.json")
    write_table(b, tmp_path / "b.json")
    old = DispatchTable()
    old.set_entries("GPU X", "bfloat16", {"6144x4096": {"1": {"kernel": "cublas"}}},
                    {"models": ["llama-3-8b"], "tp": 1})
    write_table(old, into)
    assert main(["--merge", str(tmp_path / "a.json"), str(tmp_path / "b.json"), "--table", str(into)]) == 0
    merged = read_table(into)
    assert set(merged.gpus["GPU X"]["bfloat16"]["shapes"]) == {"6144x4096", "14336x4096", "8192x3584"}
    assert merged.coverage("GPU X", "bfloat16") == {"1": ["llama-3-8b"], "2": ["llama-3-8b"], "8": ["llama-3-70b"]}
    assert main(["--merge", str(tmp_path / "nope.json")]) == 2
    assert capsys.readouterr().err.startswith("error: no table at")


def _row(n, k, m, kernel, ratio):
    return {"variant": "dispatch", "layers": "m.proj", "n": n, "k": k, "m": m, "kernel": kernel,
            "ratio_vs_cublas": ratio}


def test_confirm_sends_a_winner_the_bench_ran_below_cublas_back_to_cublas():
    lt = {"kernel": "cublaslt", "config": {"algo": 0}, "us": 9.0, "cublas_us": 10.0, "speedup": 1.11,
          "best_cublaslt": {"config": {"algo": 0}, "us": 9.0, "ratio": 1.11}}
    split = {"kernel": "triton_splitk", "config": {"SPLIT_K": 4}, "us": 8.0, "cublas_us": 10.0, "speedup": 1.25}
    shapes = {"64x32": {"1": dict(lt), "16": dict(split), "256": {"kernel": "cublas", "config": None, "us": 5.0,
                                                                  "cublas_us": 5.0, "speedup": 1.0}}}
    rows = [_row(64, 32, 1, "cublaslt", 0.97),  # lost in the bench: back to cuBLAS
            _row(64, 32, 9, "triton_splitk", 1.02),  # bucket 16, confirmed
            _row(64, 32, 200, "cublas", 0.95),  # cuBLAS through the op: nothing to drop
            _row(64, 32, 2, "triton_tma", 0.90),  # the table's winner for bucket 16 is another kernel now
            {**_row(64, 32, 1, "cublaslt", 0.5), "variant": "triton"},  # not the dispatch
            _row(99, 32, 1, "cublaslt", 0.5)]  # a shape the table does not know
    dropped = confirm(shapes, rows)
    assert len(dropped) == 1 and "cublaslt 0.970x in the bench, tuned at 1.11x" in dropped[0]
    entry = shapes["64x32"]["1"]
    assert entry["kernel"] == "cublas" and entry["us"] == 10.0 and entry["speedup"] == 1.0
    assert entry["unconfirmed"] == {"kernel": "cublaslt", "config": {"algo": 0}, "tune_speedup": 1.11,
                                    "bench_ratio": 0.97}
    assert entry["best_cublaslt"] == lt["best_cublaslt"]  # what the tune measured stays for the next tune
    assert "bench_ratio" not in entry  # a dropped winner's bench ratio is under "unconfirmed"
    assert shapes["64x32"]["16"] == {**split, "bench_ratio": 1.02}  # confirmed: the bench's own ratio is kept
    assert "bench_ratio" not in shapes["64x32"]["256"]  # cuBLAS, and the row for another kernel, judge nothing
    table = DispatchTable({"G": {"bfloat16": {"shapes": shapes}}})
    assert table.lookup("G", "bfloat16", 64, 32, 1) == dispatch.CUBLAS
    assert table.routes_any("G", "bfloat16", 64, 32)  # bucket 16 still wins


BENCH_RESULTS = Path(__file__).resolve().parents[1] / "bench" / "results"


@pytest.mark.parametrize("bench", sorted(str(p.relative_to(BENCH_RESULTS))
                                         for p in BENCH_RESULTS.rglob("gemm_bfloat16.json")))
def test_no_shipped_winner_is_one_its_committed_bench_measured_below_cublas(bench):
    """Every committed bench of a GPU (its shipped set, repeats, TP sizes) went through --confirm."""
    data = json.loads((BENCH_RESULTS / bench).read_text())
    gpu = bench_gpu(data["env"])
    shapes = read_table(dispatch.table_path(gpu)).gpus[gpu]["bfloat16"]["shapes"]
    assert confirm(json.loads(json.dumps(shapes)), data["rows"]) == []  # the shipped tables went through --confirm


def test_confirm_on_bad_input_says_what_in_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text('{"rows": []}')
    for given, message in ((str(tmp_path / "nosuch.json"), "no such file"),
                           (str(bad), "is not a custom_kernels.bench")):
        assert main(["--confirm", given]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err, err
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"env": {"gpu": "NVIDIA H200"}, "rows": [_row(64, 32, 1, "cublaslt", 0.9)]}))
    assert main(["--confirm", str(other), "--table", str(tmp_path / "empty.json")]) == 2
    assert "has no entries for NVIDIA H200" in capsys.readouterr().err
    assert not (tmp_path / "empty.json").exists()  # nothing half-done


def test_the_ops_table_keeps_its_answers_and_they_are_the_tables():
    """The op looks its kernel up on every call outside a CUDA graph: the kept answer must be the file's."""
    tables = dispatch.reload_table()
    try:
        shipped = read_table(dispatch.table_path("NVIDIA H200"))
        shapes = shipped.gpus["NVIDIA H200"]["bfloat16"]["shapes"]
        for key in shapes:
            n, k = map(int, key.split("x"))
            for m in (1, 3, 16, 100, 1024, 1536, 3585, 4096, 9000):
                first = tables.lookup("NVIDIA H200", "bfloat16", n, k, m)
                assert first == shipped.lookup("NVIDIA H200", "bfloat16", n, k, m)
                assert tables.lookup("NVIDIA H200", "bfloat16", n, k, m) is first  # kept, not looked up again
        assert tables.lookup("GPU nobody tuned", "bfloat16", 64, 32, 8) == dispatch.CUBLAS
    finally:
        dispatch.reload_table()
