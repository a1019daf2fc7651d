// cuBLASLt GEMM with the bias fused into the epilogue, bound as the torch op
// custom_kernels_cuda::cublaslt_linear(x [M,K], w [N,K], bias [N]?, algo) -> y [M,N].
//
// Why it exists: the CUDA C++ route end to end (torch cpp_extension build, TORCH_LIBRARY binding, test,
// bench) and one real knob cuBLAS's F.linear doesn't expose: the heuristic's ranked algorithm list.
// `algo` picks the i-th of up to kMaxAlgos algorithms the heuristic returns for this problem; the tuner
// measures each index and the dispatch table stores the winner. Graph-capture safe: no host sync, the
// workspace comes from the caching allocator on the current stream.
#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <cublasLt.h>
#include <torch/library.h>

#include <map>
#include <mutex>
#include <tuple>
#include <vector>

namespace {

constexpr int kMaxAlgos = 8;
constexpr size_t kWorkspaceBytes = 32u << 20;  // what PyTorch gives cuBLASLt on Hopper by default

#define CHECK_CUBLAS(expr)                                                                   \
  do {                                                                                       \
    cublasStatus_t st_ = (expr);                                                             \
    TORCH_CHECK(st_ == CUBLAS_STATUS_SUCCESS, "cuBLASLt: ", #expr, " failed with status ", \
                static_cast<int>(st_));                                                      \
  } while (0)

cudaDataType_t to_cuda_type(at::ScalarType t) {
  switch (t) {
    case at::kHalf: return CUDA_R_16F;
    case at::kBFloat16: return CUDA_R_16BF;
    case at::kFloat: return CUDA_R_32F;
    default: TORCH_CHECK(false, "cublaslt_linear: unsupported dtype ", t);
  }
}

// The layouts and matmul descriptor for one problem, plus the heuristic's ranked algorithms.
struct Plan {
  cublasLtMatmulDesc_t op = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, d = nullptr;
  std::vector<cublasLtMatmulHeuristicResult_t> algos;
};

using Key = std::tuple<int, int64_t, int64_t, int64_t, int64_t, bool, int>;  // dtype, M, N, K, ldx, bias, device
std::map<Key, Plan> g_plans;
std::mutex g_mutex;

// Row-major y[M,N] = x[M,K] w[N,K]^T is column-major y^T[N,M] = (w^T)^T[N,K] x^T[K,M]:
// A = w (column-major K x N, ld K, transposed), B = x (column-major K x M, ld ldx), D = y (N x M, ld N).
Plan& get_plan(cublasLtHandle_t handle, at::ScalarType dtype, int64_t M, int64_t N, int64_t K, int64_t ldx,
               bool has_bias, int device) {
  Key key{static_cast<int>(dtype), M, N, K, ldx, has_bias, device};
  std::lock_guard<std::mutex> lock(g_mutex);
  auto it = g_plans.find(key);
  if (it != g_plans.end()) return it->second;
  Plan plan;
  const cudaDataType_t t = to_cuda_type(dtype);
  const cublasComputeType_t compute = dtype == at::kFloat ? CUBLAS_COMPUTE_32F : CUBLAS_COMPUTE_32F;
  CHECK_CUBLAS(cublasLtMatmulDescCreate(&plan.op, compute, CUDA_R_32F));
  cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
  CHECK_CUBLAS(cublasLtMatmulDescSetAttribute(plan.op, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof(ta)));
  CHECK_CUBLAS(cublasLtMatmulDescSetAttribute(plan.op, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof(tb)));
  cublasLtEpilogue_t epi = has_bias ? CUBLASLT_EPILOGUE_BIAS : CUBLASLT_EPILOGUE_DEFAULT;
  CHECK_CUBLAS(cublasLtMatmulDescSetAttribute(plan.op, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, sizeof(epi)));
  CHECK_CUBLAS(cublasLtMatrixLayoutCreate(&plan.a, t, K, N, K));
  CHECK_CUBLAS(cublasLtMatrixLayoutCreate(&plan.b, t, K, M, ldx));
  CHECK_CUBLAS(cublasLtMatrixLayoutCreate(&plan.d, t, N, M, N));

  cublasLtMatmulPreference_t pref;
  CHECK_CUBLAS(cublasLtMatmulPreferenceCreate(&pref));
  size_t ws = kWorkspaceBytes;
  CHECK_CUBLAS(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws,
                                                    sizeof(ws)));
  cublasLtMatmulHeuristicResult_t results[kMaxAlgos];
  int found = 0;
  CHECK_CUBLAS(cublasLtMatmulAlgoGetHeuristic(handle, plan.op, plan.a, plan.b, plan.d, plan.d, pref, kMaxAlgos,
                                              results, &found));
  cublasLtMatmulPreferenceDestroy(pref);
  TORCH_CHECK(found > 0, "cuBLASLt found no algorithm for M=", M, " N=", N, " K=", K);
  plan.algos.assign(results, results + found);
  return g_plans.emplace(key, std::move(plan)).first->second;
}

at::Tensor cublaslt_linear(const at::Tensor& x, const at::Tensor& w, const std::optional<at::Tensor>& bias,
                           int64_t algo) {
  TORCH_CHECK(x.is_cuda() && w.is_cuda(), "cublaslt_linear: x and weight must be CUDA tensors");
  TORCH_CHECK(x.dim() == 2 && w.dim() == 2, "cublaslt_linear: expected x [M,K] and weight [N,K]");
  TORCH_CHECK(x.size(1) == w.size(1), "cublaslt_linear: K mismatch ", x.size(1), " vs ", w.size(1));
  TORCH_CHECK(x.scalar_type() == w.scalar_type(), "cublaslt_linear: x and weight dtypes differ");
  c10::cuda::CUDAGuard guard(x.device());
  const int64_t M = x.size(0), N = w.size(0), K = x.size(1);
  // cuBLASLt wants unit inner strides; the rows of x may be strided (a slice of a larger buffer).
  at::Tensor xc = (x.stride(1) == 1 && x.stride(0) >= K) ? x : x.contiguous();
  at::Tensor wc = w.is_contiguous() ? w : w.contiguous();
  const bool has_bias = bias.has_value() && bias->defined();
  at::Tensor bc;
  if (has_bias) {
    TORCH_CHECK(bias->numel() == N && bias->scalar_type() == x.scalar_type(), "cublaslt_linear: bad bias");
    bc = bias->contiguous();
  }
  at::Tensor y = at::empty({M, N}, x.options());
  if (M == 0 || N == 0) return y;
  if (K == 0) return has_bias ? y.copy_(bc.expand({M, N})) : y.zero_();

  cublasLtHandle_t handle = at::cuda::getCurrentCUDABlasLtHandle();
  Plan& plan = get_plan(handle, x.scalar_type(), M, N, K, xc.stride(0), has_bias, x.get_device());
  if (has_bias) {
    const void* bias_ptr = bc.data_ptr();
    CHECK_CUBLAS(cublasLtMatmulDescSetAttribute(plan.op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias_ptr,
                                                sizeof(bias_ptr)));
  }
  const int64_t index = std::min<int64_t>(std::max<int64_t>(algo, 0), plan.algos.size() - 1);
  const auto& heur = plan.algos[index];
  at::Tensor workspace = at::empty({static_cast<int64_t>(std::max<size_t>(heur.workspaceSize, 1))},
                                   x.options().dtype(at::kByte));
  const float alpha = 1.0f, beta = 0.0f;
  CHECK_CUBLAS(cublasLtMatmul(handle, plan.op, &alpha, wc.data_ptr(), plan.a, xc.data_ptr(), plan.b, &beta,
                              y.data_ptr(), plan.d, y.data_ptr(), plan.d, &heur.algo, workspace.data_ptr(),
                              heur.workspaceSize, at::cuda::getCurrentCUDAStream()));
  return y;
}

// How many algorithms the heuristic offers for a problem (the tuner's search range).
int64_t cublaslt_num_algos(const at::Tensor& x, const at::Tensor& w, bool has_bias) {
  c10::cuda::CUDAGuard guard(x.device());
  at::Tensor xc = (x.stride(1) == 1 && x.stride(0) >= x.size(1)) ? x : x.contiguous();
  return get_plan(at::cuda::getCurrentCUDABlasLtHandle(), x.scalar_type(), x.size(0), w.size(0), x.size(1),
                  xc.stride(0), has_bias, x.get_device())
      .algos.size();
}

}  // namespace

TORCH_LIBRARY(custom_kernels_cuda, m) {
  m.def("cublaslt_linear(Tensor x, Tensor w, Tensor? bias, int algo) -> Tensor");
  m.def("cublaslt_num_algos(Tensor x, Tensor w, bool has_bias) -> int");
}

TORCH_LIBRARY_IMPL(custom_kernels_cuda, CUDA, m) {
  m.impl("cublaslt_linear", &cublaslt_linear);
  m.impl("cublaslt_num_algos", &cublaslt_num_algos);
}
