// Matrix products on CUDA tensors through cuBLASLt: the GPU twin of core/ops/matmul.h.
// a and b are bf16 or f32; c is their dtype, or f32 under bf16 inputs (weight gradients add up in
// fp32). Accumulation is fp32 (CUBLAS_COMPUTE_32F: f32 inputs never run as TF32).
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "core/ops/matmul.h"
#include "core/tensor.h"

namespace memento::ops::cuda {

// The cuBLASLt workspace each GPU holds once it has run a GEMM (from its caching pool).
inline constexpr size_t kGemmWorkspaceBytes = size_t{32} << 20;

// c = alpha * op(a) * op(b) + beta * c, with exactly core/ops/matmul.h's semantics: each tensor is
// read as a row-major matrix whose columns are its last dimension; op(a) (M, K), op(b) (K, N),
// c (M, N); beta = 1 accumulates. beta = 0 never reads c (it may hold NaN); K = 0 gives beta * c.
// a, b: both f32 or both bf16; c: a's dtype, or f32 when a is bf16. All on one GPU.
// The descriptors and the heuristic's algorithm are cached per (device, M, N, K, transposes,
// dtypes, beta != 0, pointer alignments); one cuBLASLt handle and one 32 MiB workspace per device
// serve every stream, so calls on two non-default streams of a device must not overlap in time.
// Where cuBLASLt offers no algorithm it falls back to matmul_tiled (a WARN names the shape).
void matmul(const TensorView& a, bool transpose_a, const TensorView& b, bool transpose_b,
            const TensorView& c, double alpha = 1.0, double beta = 0.0,
            cudaStream_t stream = nullptr);

// The same contract through a shared-memory tiled kernel (fp32 accumulation in order of k, so
// deterministic): matmul's fallback, public so that tests can run it on any shape.
void matmul_tiled(const TensorView& a, bool transpose_a, const TensorView& b, bool transpose_b,
                  const TensorView& c, double alpha = 1.0, double beta = 0.0,
                  cudaStream_t stream = nullptr);

// Floating-point operations (2 M N K) and calls of cuda::matmul since the last reset; seconds
// stays 0 because the products run asynchronously (time them with events).
GemmStats gemm_stats();
void reset_gemm_stats();

// The plan cache: distinct plans built, those that fell back to matmul_tiled, and lookups that
// found an existing plan.
struct GemmCacheStats {
  int64_t plans = 0;
  int64_t fallback_plans = 0;
  int64_t hits = 0;
};
GemmCacheStats gemm_cache_stats();

// Launcher on raw device pointers: dense row-major a (transpose_a ? K : M, transpose_a ? M : K),
// b (transpose_b ? N : K, transpose_b ? K : N), c (M, N). TIn, TOut: (float, float),
// (__nv_bfloat16, __nv_bfloat16) or (__nv_bfloat16, float). Checks the launch.
template <typename TIn, typename TOut>
void launch_matmul_tiled(const TIn* a, bool transpose_a, const TIn* b, bool transpose_b, TOut* c,
                         int64_t M, int64_t N, int64_t K, float alpha, float beta,
                         cudaStream_t stream);

}  // namespace memento::ops::cuda
