"""Kernel -> source map against the real vLLM sdist's csrc/ (vllm_source tier), plus name parsing and
library categorisation (default tier). Kernel names are written the way torch.profiler reports them
(CUPTI's demangled names)."""

from __future__ import annotations

import ast
import re
from collections import Counter
from pathlib import Path

import pytest

from tests.support.vllm_source import NEWEST, PINNED, vllm_source_tree
from workbench.trace.kernel_map import KernelIndex, build_index
from workbench.trace.kernel_names import split_kernel_name
from workbench.trace.source_scan import CUDA_SUFFIXES, scan_cuda_sources
from workbench.trace.targets import vllm_profiler_setup

ACT_AND_MUL = ("void vllm::act_and_mul_kernel<c10::BFloat16, &(c10::BFloat16 vllm::silu_kernel<c10::BFloat16>"
               "(c10::BFloat16 const&)), true>(c10::BFloat16*, c10::BFloat16 const*, int)")
FUSED_ADD_RMS = ("std::enable_if<(8>0)&&vllm::_typeConvert<c10::BFloat16>::exists, void>::type "
                 "vllm::fused_add_rms_norm_kernel<c10::BFloat16, 8>(c10::BFloat16*, long, c10::BFloat16*, "
                 "c10::BFloat16 const*, float, int, int)")

# (reported name, origin, category): library kernels as they show up on H100/H200 profiles.
LIBRARY_KERNELS = [
    ("sm90_xmma_gemm_bf16bf16_bf16f32_f32_tn_n_tilesize128x128x64_warpgroupsize1x1x1_execute_segment_k_off_"
     "kernel__5x_cublas", "cublas", "gemm"),
    ("nvjet_tst_128x64_64x8_2x1_v_bz_TNT", "cublas", "gemm"),
    ("cutlass3x_sm90_tensorop_gemm_bf16_bf16_f32_void_bf16_128x128x64_1x1x1_0_tnn_align8_warpspecialized_"
     "cooperative_epi_tma", "cublas", "gemm"),
    ("ampere_bf16_s16816gemm_bf16_128x64_ldg8_f2f_stages_64x4_tn", "cublas", "gemm"),
    ("void cutlass::Kernel2<cutlass_80_wmma_tensorop_bf16_s161616gemm_bf16_16x16_128x1_tn_align8>"
     "(cutlass_80_wmma_tensorop_bf16_s161616gemm_bf16_16x16_128x1_tn_align8::Params)", "cublas", "gemm"),
    ("void gemv2T_kernel_val<int, int, __nv_bfloat16, __nv_bfloat16, float, float, 128, 16, 4, 4, false, false, "
     "false, true, cublasGemvTensorStridedBatched<__nv_bfloat16 const>, "
     "cublasGemvTensorStridedBatched<__nv_bfloat16>, float>(cublasGemvParamsEx<int, "
     "cublasGemvTensorStridedBatched<__nv_bfloat16 const>, float>, float, float)", "cublas", "gemm"),
    ("triton_poi_fused_add_mul_rsqrt_0", "triton-inductor", "elementwise"),
    ("triton_red_fused__to_copy_add_mean_mul_pow_rsqrt_1", "triton-inductor", "norm"),
    ("ncclDevKernel_AllReduce_Sum_bf16_RING_LL(ncclDevKernelArgsStorage<4096ul>)", "nccl", "communication"),
    ("cudnn_generated_fort_native_sdpa_sm90_knob_7_64x128x128_4x1x1_kernel0_0", "cudnn", "attention"),
    ("void at::native::vectorized_elementwise_kernel<4, at::native::FillFunctor<float>, std::array<char*, 1ul> >"
     "(int, at::native::FillFunctor<float>, std::array<char*, 1ul>)", "aten", "elementwise"),
    ("void at::native::(anonymous namespace)::cunn_SoftMaxForward<4, float, float, float, "
     "at::native::(anonymous namespace)::SoftMaxForwardEpilogue>(float*, float const*, int)", "aten", "reduction"),
    ("void pytorch_flash::flash_fwd_kernel<pytorch_flash::Flash_fwd_kernel_traits<64, 128, 128, 4, false, false, "
     "cutlass::bfloat16_t, pytorch_flash::Flash_kernel_traits<64, 128, 128, 4, cutlass::bfloat16_t> >, false, "
     "true, false, false, true, true, false, false>(pytorch_flash::Flash_fwd_params)", "aten", "attention"),
    ("void flash::flash_fwd_splitkv_kernel<Flash_fwd_kernel_traits<128, 64, 128, 4, false, false, "
     "cutlass::bfloat16_t, Flash_kernel_traits<128, 64, 128, 4, cutlass::bfloat16_t> >, false, true, false, false, "
     "true, true, false, false>(Flash_fwd_params)", "flash-attn", "attention"),
    ("Memcpy HtoD (Pageable -> Device)", "cuda-runtime", "memory"),
]


# ---------------------------------------------------------------------------------------------- default tier

def test_split_kernel_name_handles_templates_sfinae_and_mangling():
    assert split_kernel_name(ACT_AND_MUL) == (
        ["vllm"], "act_and_mul_kernel",
        "c10::BFloat16, &(c10::BFloat16 vllm::silu_kernel<c10::BFloat16>(c10::BFloat16 const&)), true")
    assert split_kernel_name(FUSED_ADD_RMS)[:2] == (["vllm"], "fused_add_rms_norm_kernel")
    assert split_kernel_name("vllm::act_and_mul_kernel<c10::BFloat16, &vllm::silu_kernel<c10::BFloat16>, true>"
                             )[:2] == (["vllm"], "act_and_mul_kernel")
    assert split_kernel_name("_ZN4vllm15rms_norm_kernelIN3c108BFloat16ELi8ELi2EEEvPT_PKS3_lllllS6_fii")[:2] == (
        ["vllm"], "rms_norm_kernel")
    assert split_kernel_name("void at::native::(anonymous namespace)::foo<float>(float*)")[:2] == (
        ["at", "native", "(anonymous namespace)"], "foo")
    assert split_kernel_name("kernel_unified_attention_2d") == ([], "kernel_unified_attention_2d", "")


def test_scanner_on_tricky_declarations(tmp_path):
    (tmp_path / "k.cu").write_text('''
#define NS_NAME mine
namespace outer { namespace inner {
// __global__ void commented_out() {}
template <typename T, int W>
__global__ std::enable_if_t<(W > 0) && sizeof(T) == 2> sfinae_kernel(T* x) {}
template <typename T>
__global__ void __launch_bounds__(256, VLLM_BLOCKS_PER_SM(256)) bounded(T* x) {}
}  // namespace inner
static __global__ __launch_bounds__(128) void static_one(int) { const char* s = "{ __global__"; }
}
namespace NS_NAME {
#if defined(OLD_ARCH)
__global__ void branch_kernel(int) {}
}  // namespace NS_NAME
#else
__global__ void branch_kernel(int) {}
#endif
__global__ void declared_only(int);
template <typename T, template <typename, typename> class Epi>
struct Epilogue : private Base<T, Epi<T, int>> { int x; };
struct Forward;
enum class Color { red };
}
''')
    scanned = scan_cuda_sources(tmp_path, "csrc", with_types=True)
    decls = {(d.namespace, d.name, d.is_definition) for d in scanned if d.language == "cuda"}
    assert decls == {("outer::inner", "sfinae_kernel", True), ("outer::inner", "bounded", True),
                     ("outer", "static_one", True), ("mine", "branch_kernel", True), ("mine", "declared_only", False)}
    assert {(d.namespace, d.name) for d in scanned if d.language == "cuda-type"} == {("mine", "Epilogue")}


def test_custom_kernels_win_and_unknown_is_unknown(tmp_path):
    pkg = tmp_path / "custom_kernels"
    pkg.mkdir()
    (pkg / "gemm.py").write_text("import triton\n\n@triton.autotune(configs=[], key=['M'])\n@triton.jit\n"
                                 "def matmul_kernel(a_ptr):\n    pass\n")
    index = build_index(None, custom=pkg)
    hit = index.lookup("matmul_kernel")
    assert (hit.origin, hit.category, hit.source_file) == ("custom", "gemm", "custom_kernels/gemm.py")
    miss = KernelIndex().lookup("void mystery::thing<int>(int)")
    assert (miss.origin, miss.source_file) == ("unknown", None) and "not found" in miss.note


@pytest.mark.parametrize(("name", "origin", "category"), LIBRARY_KERNELS)
def test_library_kernels_without_sources(name, origin, category):
    src = KernelIndex().lookup(name)
    assert (src.origin, src.category, src.source_file) == (origin, category, None)


def test_profiler_setup_both_sides():
    kwargs, env = vllm_profiler_setup({"self", "model", "profiler_config"}, {"profiler", "torch_profiler_dir"}, "/t")
    assert kwargs == {"profiler_config": {"profiler": "torch", "torch_profiler_dir": "/t"}} and env == {}
    kwargs, env = vllm_profiler_setup({"self", "model"}, set(), "/t")
    assert kwargs == {} and env["VLLM_TORCH_PROFILER_DIR"] == "/t"


# ---------------------------------------------------------------------------------------------- vllm_source tier

def _independent_global_count(csrc: Path) -> Counter:
    """``__global__`` occurrences per file, comments and string literals removed by plain regexes
    (a different method from the scanner's tokenizer)."""
    counts: Counter = Counter()
    for path in csrc.rglob("*"):
        if path.suffix not in CUDA_SUFFIXES or not path.is_file():
            continue
        text = path.read_text(errors="replace")
        text = re.sub(r"/\*.*?\*/", " ", text, flags=re.S)
        text = re.sub(r"//[^\n]*", " ", text)
        text = re.sub(r'"(?:\\.|[^"\\\n])*"', '""', text)
        n = len(re.findall(r"\b__global__\b", text))
        if n:
            counts[f"csrc/{path.relative_to(csrc).as_posix()}"] = n
    return counts


@pytest.fixture(scope="module", params=[PINNED, NEWEST])
def tree_index(request):
    tree = vllm_source_tree(request.param)
    return request.param, tree, build_index(tree)


@pytest.mark.vllm_source
def test_every_global_kernel_is_found(tree_index):
    _, tree, index = tree_index
    cuda = [d for d in index.decls if d.language == "cuda"]
    expected = _independent_global_count(tree / "csrc")
    assert Counter(d.file for d in cuda) == expected
    assert sum(expected.values()) > 150
    for d in cuda:  # the name really is declared at that line or just below it
        lines = (tree / d.file).read_text(errors="replace").splitlines()[d.line - 1:d.line + 6]
        assert re.search(rf"\b{re.escape(d.name)}\s*\(", "\n".join(lines)), d


@pytest.fixture(scope="module")
def pinned_index():
    return build_index(vllm_source_tree(PINNED))


@pytest.mark.vllm_source
def test_pinned_examples_map_to_their_files(pinned_index):
    index = pinned_index
    cases = {
        ACT_AND_MUL: "csrc/activation_kernels.cu",
        "vllm::act_and_mul_kernel<c10::BFloat16, &vllm::silu_kernel<c10::BFloat16>, true>":
            "csrc/activation_kernels.cu",
        FUSED_ADD_RMS: "csrc/layernorm_kernels.cu",
        "void vllm::rms_norm_kernel<c10::BFloat16, 8, 2>(c10::BFloat16*, c10::BFloat16 const*, long, long, long, "
        "long, c10::BFloat16 const*, float, int, int)": "csrc/layernorm_kernels.cu",
        "void vllm::rotary_embedding_kernel<c10::BFloat16, true>(long const*, c10::BFloat16*, c10::BFloat16*, "
        "c10::BFloat16 const*, int, long, long, long, int, int, int)": "csrc/pos_encoding_kernels.cu",
        "void vllm::reshape_and_cache_flash_kernel<__nv_bfloat16, __nv_bfloat16, (vllm::Fp8KVCacheDataType)0>"
        "(__nv_bfloat16 const*, __nv_bfloat16 const*, __nv_bfloat16*, __nv_bfloat16*, long const*, long, long, "
        "long, long, long, int, int, int, float const*, float const*)": "csrc/cache_kernels.cu",
        "void vllm::paged_attention_v1_kernel<unsigned short, unsigned short, 128, 16, 128, "
        "(vllm::Fp8KVCacheDataType)0, false>(unsigned short*)": "csrc/attention/attention_kernels.cuh",
        "void marlin::permute_cols_kernel(int4 const*, int const*, int4*, int, int, int)":
            "csrc/quantization/gptq_marlin/gptq_marlin.cu",
        "void permute_cols_kernel(int4 const*, int const*, int4*, int, int, int)": "csrc/permute_cols.cu",
        "kernel_unified_attention_2d": "vllm/attention/ops/triton_unified_attention.py",
    }
    for name, file in cases.items():
        src = index.lookup(name)
        assert src.source_file == file, (name, src)
        assert src.origin in ("vllm-csrc", "vllm-triton") and len(src.candidates) == 1
    cats = {index.lookup(n).category for n in (ACT_AND_MUL, FUSED_ADD_RMS)}
    assert cats == {"activation", "norm"}
    # A stale hand-written table says csrc/ops/layernorm.cu: that file does not even exist in 0.13.0.
    assert not (vllm_source_tree(PINNED) / "csrc/ops/layernorm.cu").exists()


@pytest.mark.vllm_source
@pytest.mark.parametrize(("name", "origin", "category"), LIBRARY_KERNELS)
def test_library_kernels_never_map_into_csrc(tree_index, name, origin, category):
    _, _, index = tree_index
    src = index.lookup(name)
    assert (src.origin, src.source_file) == (origin, None)


CUTLASS_FP8 = ("void cutlass::device_kernel<cutlass::gemm::kernel::GemmUniversal<cute::tuple<int, int, int, int>, "
               "cutlass::gemm::collective::CollectiveMma<cutlass::gemm::MainloopSm90TmaGmmaWarpSpecialized<5, "
               "cute::tuple<cute::C<1>, cute::C<1>, cute::C<1> >, cutlass::gemm::KernelTmaWarpSpecialized>, "
               "cute::tuple<cute::C<64>, cute::C<128>, cute::C<128> >, cutlass::float_e4m3_t>, "
               "cutlass::epilogue::collective::CollectiveEpilogue<vllm::c3x::ScaledEpilogue<float, "
               "cutlass::bfloat16_t, cute::tuple<cute::C<64>, cute::C<128>, cute::C<128> > >::EVTCompute>, void> >"
               "(cutlass::gemm::kernel::GemmUniversal<cute::tuple<int, int, int, int>, void>::Params)")


@pytest.mark.vllm_source
def test_cutlass_kernels_attributed_through_their_vllm_types(pinned_index):
    src = pinned_index.lookup(CUTLASS_FP8)
    assert (src.origin, src.category) == ("vllm-csrc", "gemm")
    assert src.source_file == "csrc/cutlass_extensions/epilogue/scaled_mm_epilogues_c3x.hpp"  # not the c2x one
    assert "vllm::c3x::ScaledEpilogue" in src.note
    plain = pinned_index.lookup("void cutlass::device_kernel<cutlass::gemm::kernel::GemmUniversal<int, void> >(int)")
    assert (plain.origin, plain.source_file) == ("cutlass", None)


@pytest.mark.vllm_source
def test_same_name_other_namespace_is_unknown(tree_index):
    _, _, index = tree_index
    src = index.lookup("void at::native::rms_norm_kernel<float>(float*)")  # not vLLM's kernel
    assert src.origin == "aten" and src.source_file is None
    src = index.lookup("void someone::rms_norm_kernel<float>(float*)")
    assert src.origin == "unknown" and "other namespace" in src.note


def _init_params_and_profiler_fields(tree: Path) -> tuple[set[str], set[str]]:
    llm = ast.parse((tree / "vllm/entrypoints/llm.py").read_text())
    (cls,) = [n for n in llm.body if isinstance(n, ast.ClassDef) and n.name == "LLM"]
    (init,) = [n for n in cls.body if isinstance(n, ast.FunctionDef) and n.name == "__init__"]
    params = {a.arg for a in init.args.args + init.args.kwonlyargs}
    prof = ast.parse((tree / "vllm/config/profiler.py").read_text())
    (pcls,) = [n for n in prof.body if isinstance(n, ast.ClassDef) and n.name == "ProfilerConfig"]
    fields = {n.target.id for n in pcls.body if isinstance(n, ast.AnnAssign) and isinstance(n.target, ast.Name)}
    return params, fields


@pytest.mark.vllm_source
def test_profiler_config_route_exists_in_real_sources(tree_index, tmp_path):
    _, tree, _ = tree_index
    params, fields = _init_params_and_profiler_fields(tree)
    kwargs, env = vllm_profiler_setup(params, fields, str(tmp_path))
    assert env == {} and set(kwargs["profiler_config"]) <= fields
    assert kwargs["profiler_config"]["profiler"] == "torch"
    assert {"apply_model", "start_profile", "stop_profile"} <= {
        n.name for n in ast.walk(ast.parse((tree / "vllm/entrypoints/llm.py").read_text()))
        if isinstance(n, ast.FunctionDef)}


@pytest.mark.vllm_source
def test_profiler_config_accepted_by_real_pinned_vllm(tmp_path):
    """The kwargs we pass construct the real 0.13.0 ProfilerConfig (imported from the sdist on CPU, in a
    subprocess so the sdist's vllm package doesn't leak into this process)."""
    import subprocess
    import sys

    code = f"""
import sys
sys.path.insert(0, {str(vllm_source_tree(PINNED))!r})
try:
    from vllm.config.profiler import ProfilerConfig
except ModuleNotFoundError as err:
    print("MISSING", err.name)
    raise SystemExit(0)
from workbench.trace.targets import vllm_profiler_setup
kwargs, env = vllm_profiler_setup({{"profiler_config"}}, set(ProfilerConfig.__dataclass_fields__), {str(tmp_path)!r})
config = ProfilerConfig(**kwargs["profiler_config"])
print("OK", config.profiler, config.torch_profiler_dir, config.torch_profiler_with_stack)
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                            cwd=Path(__file__).resolve().parents[2])
    assert result.returncode == 0, result.stderr[-2000:]
    last = result.stdout.strip().splitlines()[-1]
    if last.startswith("MISSING"):
        pytest.skip(f"vLLM's Python dependencies are not installed here ({last})")
    assert last == f"OK torch {tmp_path} False"
