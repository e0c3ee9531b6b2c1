#include "core/cuda/gemm.h"

#include <cublasLt.h>

#include <algorithm>
#include <atomic>
#include <compare>
#include <map>
#include <mutex>

#include "core/cuda/check.h"
#include "core/cuda/device_resource.h"
#include "core/cuda/elementwise.h"
#include "core/cuda/kernel_common.cuh"
#include "core/log.h"

// Fatal when the cuBLAS call does not return CUBLAS_STATUS_SUCCESS. Evaluates expr once.
#define CUBLAS_CHECK(expr)                                                               \
  do {                                                                                   \
    const cublasStatus_t memento_cublas_status_ = (expr);                                \
    if (memento_cublas_status_ != CUBLAS_STATUS_SUCCESS)                                 \
      ::memento::detail::fatal(                                                          \
          __FILE__, __LINE__,                                                            \
          ::memento::detail::concat("CUBLAS_CHECK failed: ", #expr, ": ",                \
                                    cublasLtGetStatusName(memento_cublas_status_), ": ", \
                                    cublasLtGetStatusString(memento_cublas_status_)));   \
  } while (0)

namespace memento::ops::cuda {
namespace {

using memento::cuda::detail::from_f32;
using memento::cuda::detail::to_f32;

constexpr size_t kWorkspaceBytes = kGemmWorkspaceBytes;
// Heuristic candidates asked for; the first that succeeds within the workspace is taken.
constexpr int kHeuristicCandidates = 8;
// cuBLASLt assumes 256-byte aligned buffers unless told otherwise.
constexpr uint32_t kMaxAlignment = 256;
constexpr int kTile = 16;  // matmul_tiled: 16 x 16 outputs per block, k in steps of 16
constexpr int64_t kMaxGridY = 65535;

// ---- The fallback kernel ----------------------------------------------------------------------

// Block (column tile, row tile) computes c[m0:m0+16, n0:n0+16], thread (ty, tx) the element
// (m0 + ty, n0 + tx), summing k in order. Tiles of op(a) and op(b) are staged in shared memory as
// fp32; each tile is read along the stored rows so that neighbouring threads load neighbouring
// addresses whether or not the operand is transposed. Row tiles past gridDim.y loop.
template <typename TIn, typename TOut>
__global__ void matmul_tiled_fp32_accumulate(const TIn* __restrict__ a, bool transpose_a,
                                             const TIn* __restrict__ b, bool transpose_b,
                                             TOut* __restrict__ c, int64_t M, int64_t N, int64_t K,
                                             float alpha, float beta) {
  __shared__ float a_tile[kTile][kTile + 1];  // (m, k) of op(a); +1 avoids bank conflicts
  __shared__ float b_tile[kTile][kTile + 1];  // (k, n) of op(b)
  const int tx = static_cast<int>(threadIdx.x);
  const int ty = static_cast<int>(threadIdx.y);
  const int64_t lda = transpose_a ? M : K;
  const int64_t ldb = transpose_b ? K : N;
  const int64_t n0 = static_cast<int64_t>(blockIdx.x) * kTile;
  const int64_t row_tiles = (M + kTile - 1) / kTile;
  for (int64_t tile_m = blockIdx.y; tile_m < row_tiles; tile_m += gridDim.y) {
    const int64_t m0 = tile_m * kTile;
    float acc = 0.f;
    for (int64_t k0 = 0; k0 < K; k0 += kTile) {
      if (!transpose_a) {  // a (M, K): a_tile[ty][tx] = a[m0 + ty, k0 + tx]
        const int64_t m = m0 + ty, k = k0 + tx;
        a_tile[ty][tx] = (m < M && k < K) ? to_f32(a[m * lda + k]) : 0.f;
      } else {  // a (K, M): a_tile[tx][ty] = a[k0 + ty, m0 + tx]
        const int64_t m = m0 + tx, k = k0 + ty;
        a_tile[tx][ty] = (m < M && k < K) ? to_f32(a[k * lda + m]) : 0.f;
      }
      if (!transpose_b) {  // b (K, N): b_tile[ty][tx] = b[k0 + ty, n0 + tx]
        const int64_t k = k0 + ty, n = n0 + tx;
        b_tile[ty][tx] = (k < K && n < N) ? to_f32(b[k * ldb + n]) : 0.f;
      } else {  // b (N, K): b_tile[tx][ty] = b[n0 + ty, k0 + tx]
        const int64_t k = k0 + tx, n = n0 + ty;
        b_tile[tx][ty] = (k < K && n < N) ? to_f32(b[n * ldb + k]) : 0.f;
      }
      __syncthreads();
#pragma unroll
      for (int kk = 0; kk < kTile; ++kk) acc = fmaf(a_tile[ty][kk], b_tile[kk][tx], acc);
      __syncthreads();
    }
    const int64_t m = m0 + ty, n = n0 + tx;
    if (m < M && n < N) {
      float out = alpha * acc;
      if (beta != 0.f) out = fmaf(beta, to_f32(c[m * N + n]), out);
      c[m * N + n] = from_f32<TOut>(out);
    }
  }
}

// ---- Shapes, dtypes, devices --------------------------------------------------------------------

struct Product {
  int64_t M, N, K;
  int64_t lda, ldb;  // columns of a and b as stored (their last dimension)
};

// Checks the operands like ops::matmul (same shape rule and message) plus the GPU's dtype and
// device rules; returns the product's dimensions.
Product check_operands(const char* op, const TensorView& a, bool transpose_a, const TensorView& b,
                       bool transpose_b, const TensorView& c) {
  struct Matrix {
    int64_t rows, cols;
  };
  const auto as_matrix = [](const TensorView& t) {
    const int64_t cols = t.ndim() == 0 ? 1 : t.size(-1);
    return Matrix{cols == 0 ? 0 : t.numel() / cols, cols};
  };
  const Matrix ma = as_matrix(a), mb = as_matrix(b), mc = as_matrix(c);
  const int64_t M = transpose_a ? ma.cols : ma.rows;
  const int64_t K = transpose_a ? ma.rows : ma.cols;
  const int64_t Kb = transpose_b ? mb.cols : mb.rows;
  const int64_t N = transpose_b ? mb.rows : mb.cols;
  MEMENTO_EXPECT(K == Kb && mc.rows == M && mc.cols == N, ShapeError, op, ": op(a) ",
                 a.shape().str(), (transpose_a ? "^T" : ""), " x op(b) ", b.shape().str(),
                 (transpose_b ? "^T" : ""), " -> c ", c.shape().str(), ": expected c (", M, ", ", N,
                 ") and inner dims ", K, " == ", Kb);
  MEMENTO_EXPECT(a.dtype() == b.dtype(), ShapeError, op, ": a is ", dtype_name(a.dtype()),
                 " but b is ", dtype_name(b.dtype()), "; expected both f32 or both bf16");
  MEMENTO_EXPECT(a.dtype() == DType::kF32 || a.dtype() == DType::kBF16, ShapeError, op,
                 ": a and b must be f32 or bf16 on the GPU, got ", dtype_name(a.dtype()));
  MEMENTO_EXPECT(c.dtype() == a.dtype() || (a.dtype() == DType::kBF16 && c.dtype() == DType::kF32),
                 ShapeError, op, ": c is ", dtype_name(c.dtype()), " for ", dtype_name(a.dtype()),
                 " inputs; expected ", dtype_name(a.dtype()),
                 (a.dtype() == DType::kBF16 ? " or f32" : ""));
  memento::cuda::detail::expect_cuda({a, b, c}, op);
  MEMENTO_EXPECT(a.device() == c.device() && b.device() == c.device(), ShapeError, op, ": a on ",
                 device_name(a.device()), ", b on ", device_name(b.device()), ", c on ",
                 device_name(c.device()), "; expected one GPU");
  return {M, N, K, ma.cols, mb.cols};
}

// Calls f(TIn{}, TOut{}) for the (checked) dtype pair.
template <typename F>
void dispatch_gemm_types(DType ab, DType c, F&& f) {
  if (ab == DType::kF32) {
    f(float{}, float{});
  } else if (c == DType::kBF16) {
    f(__nv_bfloat16{}, __nv_bfloat16{});
  } else {
    f(__nv_bfloat16{}, float{});
  }
}

// K = 0: c = beta * c (beta = 0 writes zeros and never reads c).
void scale_output(const TensorView& c, double beta, cudaStream_t stream) {
  if (beta == 0.0) {
    CUDA_CHECK(cudaMemsetAsync(c.raw(), 0, c.bytes(), stream));
  } else if (beta != 1.0) {
    scale_(c, beta, stream);
  }
}

// ---- cuBLASLt plans ---------------------------------------------------------------------------

cudaDataType_t cuda_data_type(DType dtype) {
  return dtype == DType::kF32 ? CUDA_R_32F : CUDA_R_16BF;
}

// The largest power of two dividing the address, at most 256.
uint32_t alignment_of(const void* p) {
  const auto address = reinterpret_cast<uintptr_t>(p);
  if (address == 0) return kMaxAlignment;
  return static_cast<uint32_t>(std::min<uintptr_t>(address & (~address + 1), kMaxAlignment));
}

struct PlanKey {
  int device;
  int64_t M, N, K;
  bool transpose_a, transpose_b;
  DType ab, c;
  bool accumulate;  // beta != 0: C is read
  uint32_t align_a, align_b, align_c;
  auto operator<=>(const PlanKey&) const = default;
};

PlanKey plan_key(int device, const Product& p, bool transpose_a, bool transpose_b,
                 const TensorView& a, const TensorView& b, const TensorView& c, double beta) {
  PlanKey key{};
  key.device = device;
  key.M = p.M;
  key.N = p.N;
  key.K = p.K;
  key.transpose_a = transpose_a;
  key.transpose_b = transpose_b;
  key.ab = a.dtype();
  key.c = c.dtype();
  key.accumulate = beta != 0.0;
  key.align_a = alignment_of(a.raw());
  key.align_b = alignment_of(b.raw());
  key.align_c = alignment_of(c.raw());
  return key;
}

// cuBLASLt is column-major: the row-major product c (M, N) = op(a) op(b) is computed as
// c^T (N, M) = op(b)^T op(a)^T, where a row-major (r, s) buffer is a column-major (s, r) matrix.
// So cuBLASLt's A is our b, its B is our a, and its m, n, k are our N, M, K.
struct Plan {
  bool use_cublaslt = false;
  cublasLtMatmulDesc_t desc = nullptr;
  cublasLtMatrixLayout_t lt_a = nullptr;  // our b as stored: (ldb, rows of b), ld = ldb
  cublasLtMatrixLayout_t lt_b = nullptr;  // our a as stored: (lda, rows of a), ld = lda
  cublasLtMatrixLayout_t lt_c = nullptr;  // c: (N, M), ld = N; also D
  cublasLtMatmulAlgo_t algo{};
};

struct DeviceContext {
  cublasLtHandle_t handle = nullptr;
  void* workspace = nullptr;  // kWorkspaceBytes
};

// Process-wide state, never destroyed: the handles and descriptors stay valid until exit (a
// static destructor could run after the CUDA runtime has shut down). Plans are never erased, so
// a Plan& stays valid once the mutex is released (std::map nodes do not move).
struct GemmState {
  std::mutex mutex;
  std::map<int, DeviceContext> devices;
  std::map<PlanKey, Plan> plans;
  GemmCacheStats cache;
};

GemmState& state() {
  static auto* s = new GemmState;
  return *s;
}

std::atomic<double> g_flops{0};
std::atomic<int64_t> g_calls{0};

// Caller holds the mutex and has made the device current.
const DeviceContext& device_context(GemmState& s, int device) {
  auto it = s.devices.find(device);
  if (it != s.devices.end()) return it->second;
  DeviceContext ctx;
  CUBLAS_CHECK(cublasLtCreate(&ctx.handle));
  // Once per device from the device's caching pool (contract 4), kept until exit.
  ctx.workspace = ::memento::cuda::caching_device_resource(device)->allocate(kWorkspaceBytes);
  return s.devices.emplace(device, ctx).first->second;
}

Plan make_plan(const PlanKey& key, const Product& p, cublasLtHandle_t handle) {
  Plan plan;
  CUBLAS_CHECK(cublasLtMatmulDescCreate(&plan.desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  const cublasOperation_t op_lt_a = key.transpose_b ? CUBLAS_OP_T : CUBLAS_OP_N;
  const cublasOperation_t op_lt_b = key.transpose_a ? CUBLAS_OP_T : CUBLAS_OP_N;
  CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(plan.desc, CUBLASLT_MATMUL_DESC_TRANSA, &op_lt_a,
                                              sizeof(op_lt_a)));
  CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(plan.desc, CUBLASLT_MATMUL_DESC_TRANSB, &op_lt_b,
                                              sizeof(op_lt_b)));
  const int64_t rows_a = key.transpose_a ? p.K : p.M;  // rows of a as stored
  const int64_t rows_b = key.transpose_b ? p.N : p.K;  // rows of b as stored
  const cudaDataType_t ab = cuda_data_type(key.ab);
  CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&plan.lt_a, ab, static_cast<uint64_t>(p.ldb),
                                          static_cast<uint64_t>(rows_b), p.ldb));
  CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&plan.lt_b, ab, static_cast<uint64_t>(p.lda),
                                          static_cast<uint64_t>(rows_a), p.lda));
  CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&plan.lt_c, cuda_data_type(key.c),
                                          static_cast<uint64_t>(p.N), static_cast<uint64_t>(p.M),
                                          p.N));

  cublasLtMatmulPreference_t preference = nullptr;
  CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&preference));
  const uint64_t workspace_bytes = kWorkspaceBytes;
  CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(preference,
                                                    CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                                                    &workspace_bytes, sizeof(workspace_bytes)));
  const auto set_alignment = [&](cublasLtMatmulPreferenceAttributes_t attr, uint32_t bytes) {
    CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(preference, attr, &bytes, sizeof(bytes)));
  };
  set_alignment(CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, key.align_b);
  set_alignment(CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, key.align_a);
  set_alignment(CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, key.align_c);
  set_alignment(CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, key.align_c);

  cublasLtMatmulHeuristicResult_t results[kHeuristicCandidates] = {};
  int returned = 0;
  // NOT_SUPPORTED (no heuristic for this configuration) is an answer, not an error: fall back.
  const cublasStatus_t status =
      cublasLtMatmulAlgoGetHeuristic(handle, plan.desc, plan.lt_a, plan.lt_b, plan.lt_c, plan.lt_c,
                                     preference, kHeuristicCandidates, results, &returned);
  CUBLAS_CHECK(cublasLtMatmulPreferenceDestroy(preference));
  if (status == CUBLAS_STATUS_SUCCESS) {
    for (int i = 0; i < returned; ++i) {
      if (results[i].state == CUBLAS_STATUS_SUCCESS &&
          results[i].workspaceSize <= kWorkspaceBytes) {
        plan.algo = results[i].algo;
        plan.use_cublaslt = true;
        break;
      }
    }
  }
  if (!plan.use_cublaslt) {
    CUBLAS_CHECK(cublasLtMatrixLayoutDestroy(plan.lt_c));
    CUBLAS_CHECK(cublasLtMatrixLayoutDestroy(plan.lt_b));
    CUBLAS_CHECK(cublasLtMatrixLayoutDestroy(plan.lt_a));
    CUBLAS_CHECK(cublasLtMatmulDescDestroy(plan.desc));
    plan = Plan{};
    MEMENTO_LOG_WARN("cuda::matmul: no cuBLASLt algorithm for M=", p.M, " N=", p.N, " K=", p.K,
                     " transposes ", key.transpose_a, key.transpose_b, " ", dtype_name(key.ab),
                     " -> ", dtype_name(key.c), " alignments ", key.align_a, "/", key.align_b, "/",
                     key.align_c, " (heuristic status ", cublasLtGetStatusName(status),
                     "): using the tiled kernel");
  }
  return plan;
}

}  // namespace

template <typename TIn, typename TOut>
void launch_matmul_tiled(const TIn* a, bool transpose_a, const TIn* b, bool transpose_b, TOut* c,
                         int64_t M, int64_t N, int64_t K, float alpha, float beta,
                         cudaStream_t stream) {
  if (M == 0 || N == 0) return;
  const dim3 block(kTile, kTile);
  const dim3 grid(static_cast<unsigned>((N + kTile - 1) / kTile),
                  static_cast<unsigned>(std::min<int64_t>((M + kTile - 1) / kTile, kMaxGridY)));
  matmul_tiled_fp32_accumulate<TIn, TOut>
      <<<grid, block, 0, stream>>>(a, transpose_a, b, transpose_b, c, M, N, K, alpha, beta);
  CUDA_CHECK_LAUNCH();
}

template void launch_matmul_tiled<float, float>(const float*, bool, const float*, bool, float*,
                                                int64_t, int64_t, int64_t, float, float,
                                                cudaStream_t);
template void launch_matmul_tiled<__nv_bfloat16, __nv_bfloat16>(const __nv_bfloat16*, bool,
                                                                const __nv_bfloat16*, bool,
                                                                __nv_bfloat16*, int64_t, int64_t,
                                                                int64_t, float, float,
                                                                cudaStream_t);
template void launch_matmul_tiled<__nv_bfloat16, float>(const __nv_bfloat16*, bool,
                                                        const __nv_bfloat16*, bool, float*, int64_t,
                                                        int64_t, int64_t, float, float,
                                                        cudaStream_t);

void matmul_tiled(const TensorView& a, bool transpose_a, const TensorView& b, bool transpose_b,
                  const TensorView& c, double alpha, double beta, cudaStream_t stream) {
  const Product p = check_operands("cuda::matmul_tiled", a, transpose_a, b, transpose_b, c);
  if (p.M == 0 || p.N == 0) return;
  dispatch_gemm_types(a.dtype(), c.dtype(), [&](auto in_zero, auto out_zero) {
    using TIn = decltype(in_zero);
    using TOut = decltype(out_zero);
    launch_matmul_tiled(static_cast<const TIn*>(a.raw()), transpose_a,
                        static_cast<const TIn*>(b.raw()), transpose_b, static_cast<TOut*>(c.raw()),
                        p.M, p.N, p.K, static_cast<float>(alpha), static_cast<float>(beta), stream);
  });
}

void matmul(const TensorView& a, bool transpose_a, const TensorView& b, bool transpose_b,
            const TensorView& c, double alpha, double beta, cudaStream_t stream) {
  const Product p = check_operands("cuda::matmul", a, transpose_a, b, transpose_b, c);
  if (p.M == 0 || p.N == 0) return;
  g_calls += 1;
  g_flops += 2.0 * static_cast<double>(p.M) * static_cast<double>(p.N) * static_cast<double>(p.K);
  const int device = c.device().index;  // the current one (check_operands)
  if (p.K == 0) {
    scale_output(c, beta, stream);
    return;
  }
  const PlanKey key = plan_key(device, p, transpose_a, transpose_b, a, b, c, beta);
  GemmState& s = state();
  const Plan* plan = nullptr;
  const DeviceContext* ctx = nullptr;
  {
    std::lock_guard<std::mutex> lock(s.mutex);
    ctx = &device_context(s, device);
    auto it = s.plans.find(key);
    if (it != s.plans.end()) {
      s.cache.hits += 1;
    } else {
      it = s.plans.emplace(key, make_plan(key, p, ctx->handle)).first;
      s.cache.plans += 1;
      if (!it->second.use_cublaslt) s.cache.fallback_plans += 1;
    }
    plan = &it->second;
  }
  if (!plan->use_cublaslt) {
    matmul_tiled(a, transpose_a, b, transpose_b, c, alpha, beta, stream);
    return;
  }
  const float alpha_f = static_cast<float>(alpha);
  const float beta_f = static_cast<float>(beta);
  CUBLAS_CHECK(cublasLtMatmul(ctx->handle, plan->desc, &alpha_f, b.raw(), plan->lt_a, a.raw(),
                              plan->lt_b, &beta_f, c.raw(), plan->lt_c, c.raw(), plan->lt_c,
                              &plan->algo, ctx->workspace, kWorkspaceBytes, stream));
}

GemmStats gemm_stats() { return {0.0, g_flops.load(), g_calls.load()}; }

void reset_gemm_stats() {
  g_flops = 0;
  g_calls = 0;
}

GemmCacheStats gemm_cache_stats() {
  GemmState& s = state();
  std::lock_guard<std::mutex> lock(s.mutex);
  return s.cache;
}

}  // namespace memento::ops::cuda
