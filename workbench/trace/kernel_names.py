"""What a profiled kernel name says by itself: its qualifiers, base name and template arguments (demangled or
Itanium-mangled), the library it belongs to (cuBLAS, cuDNN, NCCL, ATen, Triton/Inductor, flash-attention,
FlashInfer, CUB, the CUDA runtime) and its functional category. The source index (workbench.trace.kernel_map)
asks these before it looks at the fork, so a library kernel is never mapped onto a same-named function in csrc/.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

# Functional categories used to group the kernel table.
CATEGORIES = ("attention", "norm", "rotary", "activation", "cache", "gemm", "moe", "quantization",
              "communication", "sampling", "elementwise", "reduction", "memory", "other")


def _demangle_nested(name: str) -> str | None:
    """Qualified name from an Itanium-mangled ``_Z`` symbol (enough to look it up; no full demangler)."""
    if not name.startswith("_Z"):
        return None
    rest = name[3:] if name.startswith("_ZN") else name[2:]
    parts: list[str] = []
    i = 0
    while i < len(rest) and rest[i].isdigit():
        j = i
        while j < len(rest) and rest[j].isdigit():
            j += 1
        length = int(rest[i:j])
        parts.append(rest[j:j + length])
        i = j + length
        if not name.startswith("_ZN"):
            break
    return "::".join(parts) if parts else None


def _matching_open(text: str, close_index: int, open_ch: str, close_ch: str) -> int:
    """Index of the bracket that opens the one closing at ``close_index``; -1 when unbalanced."""
    depth = 0
    for i in range(close_index, -1, -1):
        c = text[i]
        if c == close_ch:
            depth += 1
        elif c == open_ch:
            depth -= 1
            if depth == 0:
                return i
    return -1


def _strip_template_backward(text: str) -> tuple[str, str]:
    """Split ``prefix<args>`` into (prefix, args) counting angle brackets outside parentheses only,
    so comparisons such as ``(8>0)`` inside SFINAE arguments don't unbalance them."""
    if not text.endswith(">"):
        return text, ""
    angle = 0
    paren = 0
    for i in range(len(text) - 1, -1, -1):
        c = text[i]
        if c == ")":
            paren += 1
        elif c == "(":
            paren -= 1
        elif paren == 0 and c == ">":
            angle += 1
        elif paren == 0 and c == "<":
            angle -= 1
            if angle == 0:
                return text[:i], text[i + 1:-1]
    return text, ""


def split_kernel_name(kernel: str) -> tuple[list[str], str, str]:
    """(qualifiers, base name, template arguments) of a demangled kernel name.

    ``void vllm::act_and_mul_kernel<c10::BFloat16, &vllm::silu_kernel<c10::BFloat16>, true>(...)`` ->
    (["vllm"], "act_and_mul_kernel", "c10::BFloat16, &vllm::silu_kernel<c10::BFloat16>, true").
    """
    text = kernel.strip()
    demangled = _demangle_nested(text)
    if demangled:
        text = demangled
    # Drop the parameter list: the balanced "(...)" that ends the name.
    if text.endswith(")"):
        start = _matching_open(text, len(text) - 1, "(", ")")
        if start > 0:
            text = text[:start].rstrip()
    text, targs = _strip_template_backward(text)
    # The qualified name is the last whitespace-free chain; what is before it is the return type.
    # Walk back over "a::b<...>::c" components, keeping template arguments of qualifiers intact.
    end = len(text)
    i = end
    depth_angle = 0
    depth_paren = 0
    while i > 0:
        c = text[i - 1]
        if c == ">":
            depth_angle += 1
        elif c == "<":
            depth_angle -= 1
        elif c == ")":
            depth_paren += 1
        elif c == "(":
            depth_paren -= 1
        elif c == " " and depth_angle == 0 and depth_paren == 0 and not text[:i - 1].endswith("(anonymous"):
            break
        i -= 1
    qualified = text[i:end]
    parts = _split_qualified(qualified)
    if not parts:
        return [], kernel.strip(), targs
    return parts[:-1], parts[-1], targs


def _split_qualified(qualified: str) -> list[str]:
    parts: list[str] = []
    depth = 0
    current = ""
    i = 0
    while i < len(qualified):
        c = qualified[i]
        if c in "<(":
            depth += 1
        elif c in ">)":
            depth -= 1
        if depth == 0 and qualified.startswith("::", i):
            parts.append(current)
            current = ""
            i += 2
            continue
        current += c
        i += 1
    parts.append(current)
    return [p for p in parts if p]


def namespace_key(parts: Iterable[str]) -> str:
    """Namespaces compared without anonymous ones and without qualifiers' template arguments."""
    kept = []
    for p in parts:
        if p.startswith("(anonymous") or p == "":
            continue
        kept.append(p.split("<", 1)[0])
    return "::".join(kept)


# Library kernels, recognised by name (checked before the source index so they are never mis-mapped).
# (origin, regex) in priority order, matched against the qualified function name (no template or parameter
# lists, so a vLLM kernel instantiated with at::Half is not taken for ATen). Comments show each family.
_LIBRARY_RULES: tuple[tuple[str, re.Pattern], ...] = tuple((origin, re.compile(rx)) for origin, rx in (
    # NCCL collectives: ncclKernel_AllReduce_RING_LL_Sum_bf16, ncclDevKernel_AllGather_RING_LL.
    ("nccl", r"\bnccl(Dev)?Kernel"),
    # cuDNN: cudnn::..., cudnn_generated_fort_native_sdpa_*, xmma fprop/dgrad/wgrad convolutions.
    ("cudnn", r"(?i)cudnn|_(fprop|dgrad|wgrad)_|\bimplicit_convolve"),
    # cuBLAS / cuBLASLt: sm90_xmma_gemm_*, nvjet_tst_*, ampere_bf16_s16816gemm_*, gemv2T_kernel_val,
    # cutlass_80_tensorop_* kernels compiled into cuBLAS, splitKreduce_kernel, cublasLt::*.
    ("cublas", r"(?i)^(cublas|sm\d+_xmma_|nvjet_|(ampere|volta|turing|maxwell|hopper)_"
               r"|gemv2[NT]_kernel|(internal::)?gemvx?::|gemmk1_kernel|gemmSN_|splitKreduce_kernel|dot_kernel|scal_kernel)"
               r"|^cutlass(3x|_\d+)?_"),  # bare (un-namespaced) CUTLASS names are cuBLAS's own kernels
    # Triton kernels generated by Inductor (torch.compile): triton_poi_/red_/per_/tem_ + fused op names.
    ("triton-inductor", r"^triton_(poi|red|per|tem|for|mm|bmm|\w+_fused)_"),
    # PyTorch: ATen native kernels, its CUB copies, its own flash/mem-efficient attention, c10 helpers.
    ("aten", r"^(at|at_cuda_detail|pytorch_flash|c10)::|^fmha_cutlass[FB]|"
             r"^(elementwise_kernel|vectorized_elementwise_kernel|unrolled_elementwise_kernel|reduce_kernel|"
             r"index_elementwise_kernel)$|^aten::"),
    # vLLM's flash-attention fork (vllm-flash-attn) and upstream FA2/FA3 kernels.
    ("flash-attn", r"^flash::|^flash_fwd_|FlashAttnFwd|^flash_attn"),
    ("flashinfer", r"^flashinfer::"),
    # CUB / Thrust device algorithms launched by libraries.
    ("cub", r"^(cub|thrust)(::|_)"),
))

# Checked against the whole reported name: copies/sets, and cuBLAS's CUTLASS kernels, whose identity is
# their template argument (cutlass::Kernel2<cutlass_80_wmma_tensorop_...>).
_WHOLE_NAME_RULES: tuple[tuple[str, re.Pattern], ...] = (
    ("cuda-runtime", re.compile(r"^(Memcpy|Memset|cudaMemcpy|cudaMemset)\b")),
    ("cublas", re.compile(r"^(void )?cutlass::Kernel2?<cutlass_\d+_")),
)

_CATEGORY_RULES: tuple[tuple[str, re.Pattern], ...] = tuple((cat, re.compile(rx, re.IGNORECASE)) for cat, rx in (
    ("memory", r"^(memcpy|memset)|\bcopy_kernel\b|memcpy|memset|^fill_"),
    ("communication", r"nccl|all_?reduce|allgather|all_gather|reduce_scatter|cross_device|quickreduce|"
                      r"custom_all_reduce"),
    ("attention", r"attention|attn|flash|fmha|sdpa|mha|paged_|merge_attn|scaled_dot_product|softmax_with"),
    ("rotary", r"rotary|rope|pos_encoding"),
    # Inductor names a fused RMSNorm after its ops: ..._mean_mul_pow_rsqrt_...
    ("norm", r"rms_?norm|layer_?norm|layernorm|_norm_|group_norm|batch_norm|(mean|var).*rsqrt|rsqrt.*(mean|var)"),
    ("activation", r"act_and_mul|silu|gelu|relu|swiglu|swish|sigmoid|tanh|activation|mul_and_silu|"
                   r"\bactivation_kernel"),
    ("cache", r"reshape_and_cache|copy_blocks|swap_blocks|_cache_kernel|concat_and_cache|gather_cache|"
              r"indexer_k|convert_fp8|kv_cache|gather_and_maybe_dequant_cache"),
    ("moe", r"\bmoe|topk_softmax|grouped_topk|expert|permute_unpermute"),
    ("quantization", r"quant|fp8|fp4|int8|int4|awq|gptq|marlin|gguf|machete|dequant|hadamard|scaled_mm"),
    ("gemm", r"gemm|gemv|matmul|\bmm\b|_mm_|\bbmm\b|addmm|linear|nvjet|xmma|tensorop|cutlass|dot_kernel|"
             r"splitkreduce|aten::mm|aten::addmm|aten::bmm"),
    ("sampling", r"sampl|top_?k|top_?p|argmax|multinomial|penalt|logits"),
    ("reduction", r"reduce|\bsum\b|\bmean\b|\bmax\b|\bmin\b|softmax|cumsum|argmax"),
    ("elementwise", r"elementwise|vectorized|unrolled|\bpoi_|add|mul|div|sub|pow|exp|neg|rsqrt|where|"
                    r"clamp|cast|to_copy|index|cat|embedding|fill|arange|triu|tril"),
))

# CPU profiler op names (aten::...) that mean a GEMM even though they read like elementwise ops.
_CPU_GEMM_OPS = {"aten::mm", "aten::addmm", "aten::bmm", "aten::matmul", "aten::linear", "aten::baddbmm",
                 "aten::addmv", "aten::mv", "aten::dot", "aten::_addmm_activation"}


def categorize(kernel: str, source_file: str | None = None) -> str:
    """Functional category of a kernel (or CPU op): the file name first, then the kernel name."""
    if kernel in _CPU_GEMM_OPS:
        return "gemm"
    if re.match(r"(?i)(memcpy|memset)\b", kernel):
        return "memory"
    # "moe" and "quantization" files hold GEMMs too (marlin, cutlass scaled_mm): name rules decide there.
    if source_file:
        path = source_file.lower()
        for cat, needle in (("attention", "attention"), ("norm", "layernorm"), ("rotary", "pos_encoding"),
                            ("rotary", "rope"), ("activation", "activation_kernels"), ("cache", "cache_kernels"),
                            ("communication", "all_reduce"), ("communication", "quickreduce"),
                            ("sampling", "sampler"), ("moe", "/moe/")):
            if needle in path:
                return cat
    qualifiers, base, targs = split_kernel_name(kernel)
    for text in (base, "::".join([*qualifiers, base]) + "<" + targs):
        for cat, rx in _CATEGORY_RULES:
            if rx.search(text):
                return cat
    return "other"


def library_origin(kernel: str) -> str | None:
    """The library a kernel name belongs to (cublas, cudnn, nccl, aten, ...), None when it is none of them."""
    for origin, rx in _WHOLE_NAME_RULES:
        if rx.search(kernel):
            return origin
    qualifiers, base, _ = split_kernel_name(kernel)
    short = "::".join([*qualifiers, base])
    for origin, rx in _LIBRARY_RULES:
        if rx.search(short):
            return origin
    return None
