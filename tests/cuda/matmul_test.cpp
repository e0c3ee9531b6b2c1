// Parity of the CUDA matmul (cuBLASLt, and its tiled fallback) with the CPU op over a grid of
// shapes, transposes, beta and dtype pairs; the plan cache, zero-sized dims and the shape errors.
#include "core/ops/matmul.h"

#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <limits>
#include <string>

#include "core/cuda/gemm.h"
#include "tests/cuda/cuda_testing.h"

namespace memento::testing {
namespace {

struct Dims {
  int64_t M, N, K;
};
struct Types {
  DType ab, c;  // a and b; c
};

// Odd sizes (not multiples of 8 or 16) next to model-sized ones.
constexpr Dims kDims[] = {{1, 1, 1},   {3, 5, 7},      {17, 33, 65},
                          {8, 16, 32}, {64, 768, 768}, {256, 2048, 768}};
constexpr Types kTypes[] = {
    {DType::kF32, DType::kF32}, {DType::kBF16, DType::kBF16}, {DType::kBF16, DType::kF32}};
// (alpha, beta): a plain product over a c full of NaN (beta = 0 must not read c), and an
// accumulation with a scale.
constexpr double kScales[][2] = {{1.0, 0.0}, {0.5, 1.0}};

using MatmulFn = void (*)(const TensorView&, bool, const TensorView&, bool, const TensorView&,
                          double, double, cudaStream_t);

Shape a_shape(Dims d, bool transpose_a) { return transpose_a ? Shape{d.K, d.M} : Shape{d.M, d.K}; }
Shape b_shape(Dims d, bool transpose_b) { return transpose_b ? Shape{d.N, d.K} : Shape{d.K, d.N}; }

// The parity table is keyed by the activation dtype: bf16 inputs get the bf16 row, also when c
// is f32 (inputs exact, fp32 accumulation: the error printed is far below it).
DType tolerance_key(Types t) { return t.ab; }

std::string label(const char* op, Dims d, bool transpose_a, bool transpose_b, Types t,
                  double beta) {
  // "<op>[.f32out]/<a dtype>/[M, N, K]/<transposes>/beta<b>": gpu_check.sh tabulates by the
  // first two fields.
  return std::string(op) + (t.c != t.ab ? ".f32out/" : "/") + std::string(dtype_name(t.ab)) + "/[" +
         std::to_string(d.M) + ", " + std::to_string(d.N) + ", " + std::to_string(d.K) + "]/" +
         (transpose_a ? "T" : "N") + (transpose_b ? "T" : "N") + "/beta" +
         std::to_string(static_cast<int>(beta));
}

Tensor nan_gpu(Shape shape, DType dtype) {
  Tensor host = Tensor::empty(shape, DType::kF32);
  float* p = host.data<float>();
  for (int64_t i = 0; i < host.numel(); ++i) p[i] = std::numeric_limits<float>::quiet_NaN();
  Tensor gpu = Tensor::empty(shape, dtype, kGpu);
  copy(host, gpu);
  return gpu;
}

// Runs fn on random operands and compares c with the CPU op in fp64 on the same values.
void check_product(const char* op, MatmulFn fn, Dims d, bool transpose_a, bool transpose_b, Types t,
                   double alpha, double beta, uint64_t seed) {
  const Tensor a = random_gpu(a_shape(d, transpose_a), t.ab, seed);      // op(a) (M, K)
  const Tensor b = random_gpu(b_shape(d, transpose_b), t.ab, seed + 1);  // op(b) (K, N)
  const Shape c_shape{d.M, d.N};
  const Tensor c = beta != 0.0 ? random_gpu(c_shape, t.c, seed + 2) : nan_gpu(c_shape, t.c);
  const Tensor c_ref = beta != 0.0 ? to_cpu_f64(c) : Tensor::zeros(c_shape, DType::kF64);
  ops::matmul(to_cpu_f64(a), transpose_a, to_cpu_f64(b), transpose_b, c_ref, alpha, beta);
  fn(a, transpose_a, b, transpose_b, c, alpha, beta, nullptr);
  expect_parity(label(op, d, transpose_a, transpose_b, t, beta), c, c_ref, tolerance_key(t));
}

class CudaMatmul : public CudaTest {};

TEST_F(CudaMatmul, MatchesCpuOverShapesTransposesAndDtypes) {
  uint64_t seed = 1;
  for (const Dims& d : kDims)
    for (const Types& t : kTypes)
      for (const auto& scale : kScales)
        for (bool transpose_a : {false, true})
          for (bool transpose_b : {false, true}) {
            const int64_t fallbacks = ops::cuda::gemm_cache_stats().fallback_plans;
            check_product("matmul", ops::cuda::matmul, d, transpose_a, transpose_b, t, scale[0],
                          scale[1], seed);
            seed += 3;
            // Model-sized products (every dimension a multiple of 8) must run on cuBLASLt.
            if (d.M % 8 == 0 && d.N % 8 == 0 && d.K % 8 == 0) {
              EXPECT_EQ(ops::cuda::gemm_cache_stats().fallback_plans, fallbacks)
                  << label("matmul", d, transpose_a, transpose_b, t, scale[1]) << " fell back";
            }
          }
  const ops::cuda::GemmCacheStats stats = ops::cuda::gemm_cache_stats();
  std::printf("[gemm cache] plans %lld, fallback plans %lld\n", static_cast<long long>(stats.plans),
              static_cast<long long>(stats.fallback_plans));
}

TEST_F(CudaMatmul, TiledFallbackMatchesCpu) {
  uint64_t seed = 1000;
  for (const Dims& d : kDims) {
    if (d.M * d.N * d.K > 64 * 768 * 768) continue;  // the fallback is slow, its logic the same
    for (const Types& t : kTypes)
      for (const auto& scale : kScales)
        for (bool transpose_a : {false, true})
          for (bool transpose_b : {false, true}) {
            check_product("matmul_tiled", ops::cuda::matmul_tiled, d, transpose_a, transpose_b, t,
                          scale[0], scale[1], seed);
            seed += 3;
          }
  }
}

// Views one element into their buffers: 2- or 4-byte aligned pointers, which cuBLASLt must be
// told about (or which send the product to the fallback).
TEST_F(CudaMatmul, MisalignedViewsMatchCpu) {
  uint64_t seed = 2000;
  for (const Types& t : kTypes)
    for (const Dims& d : {Dims{17, 33, 65}, Dims{64, 128, 96}}) {
      const Shape as{d.M, d.K}, bs{d.K, d.N}, cs{d.M, d.N};
      const Tensor a_buf = random_gpu(Shape{as.numel() + 1}, t.ab, seed++);
      const Tensor b_buf = random_gpu(Shape{bs.numel() + 1}, t.ab, seed++);
      const Tensor c_buf = random_gpu(Shape{cs.numel() + 1}, t.c, seed++);
      const TensorView a = a_buf.view().flat_range(1, as);
      const TensorView b = b_buf.view().flat_range(1, bs);
      const TensorView c = c_buf.view().flat_range(1, cs);
      const double c_head = values(c_buf)[0];  // outside the view of c
      const Tensor c_ref = to_cpu_f64(c);
      ops::matmul(to_cpu_f64(a), false, to_cpu_f64(b), false, c_ref, 1.0, 1.0);
      ops::cuda::matmul(a, false, b, false, c, 1.0, 1.0);
      expect_parity(label("matmul_misaligned", d, false, false, t, 1.0), c, c_ref,
                    tolerance_key(t));
      EXPECT_EQ(values(c_buf)[0], c_head) << "wrote before the view";
    }
}

TEST_F(CudaMatmul, ReadsLeadingDimsAsRows) {
  // x (B, T, C) @ w^T with w (OC, C) -> y (B, T, OC), the linear layer's forward.
  const Tensor x = random_gpu(Shape{2, 3, 7}, DType::kBF16, 1);
  const Tensor w = random_gpu(Shape{5, 7}, DType::kBF16, 2);
  const Tensor y = Tensor::empty(Shape{2, 3, 5}, DType::kBF16, kGpu);
  ops::cuda::matmul(x, false, w, true, y);
  const Tensor y_ref = Tensor::zeros(Shape{2, 3, 5}, DType::kF64);
  ops::matmul(to_cpu_f64(x), false, to_cpu_f64(w), true, y_ref);
  expect_parity("matmul/bf16/[2, 3, 7]x[5, 7]^T", y, y_ref, DType::kBF16);
}

TEST_F(CudaMatmul, CachedPlanGivesIdenticalResults) {
  // A weight-gradient-like product x^T dy, bf16 -> f32, every dimension a multiple of 8.
  const Tensor a = random_gpu(Shape{96, 200}, DType::kBF16, 3);
  const Tensor b = random_gpu(Shape{96, 136}, DType::kBF16, 4);
  const Tensor c = Tensor::empty(Shape{200, 136}, DType::kF32, kGpu);
  const ops::cuda::GemmCacheStats start = ops::cuda::gemm_cache_stats();
  ops::cuda::matmul(a, true, b, false, c);
  const std::vector<double> first = values(c);
  const ops::cuda::GemmCacheStats before = ops::cuda::gemm_cache_stats();
  ops::cuda::matmul(a, true, b, false, c);
  const ops::cuda::GemmCacheStats after = ops::cuda::gemm_cache_stats();
  EXPECT_EQ(values(c), first);
  EXPECT_EQ(before.fallback_plans, start.fallback_plans)
      << "cuBLASLt offered no algorithm for an aligned bf16 -> f32 product";
  EXPECT_EQ(after.plans, before.plans) << "the second call built a new plan";
  EXPECT_EQ(after.hits, before.hits + 1) << "the second call missed the cache";
  std::printf("[gemm cache] plans %lld, fallback plans %lld, hits %lld\n",
              static_cast<long long>(after.plans), static_cast<long long>(after.fallback_plans),
              static_cast<long long>(after.hits));
}

TEST_F(CudaMatmul, ZeroSizedDims) {
  // K = 0 (a weight gradient over zero rows, x^T dy with x (0, 4)): c = beta * c, and beta = 0
  // writes zeros without reading c. (A (4, 0) a reads as a (0, 0) matrix, as on the CPU.)
  const Tensor a = Tensor::empty(Shape{0, 4}, DType::kBF16, kGpu);
  const Tensor b = Tensor::empty(Shape{0, 6}, DType::kBF16, kGpu);
  const Tensor c = random_gpu(Shape{4, 6}, DType::kF32, 5);
  const std::vector<double> c0 = values(c);
  ops::cuda::matmul(a, true, b, false, c, 1.0, 0.5);
  const std::vector<double> halved = values(c);
  for (size_t i = 0; i < c0.size(); ++i) EXPECT_EQ(halved[i], 0.5 * c0[i]) << i;
  const Tensor c_nan = nan_gpu(Shape{4, 6}, DType::kBF16);
  ops::cuda::matmul(a, true, b, false, c_nan, 1.0, 0.0);
  for (double v : values(c_nan)) EXPECT_EQ(v, 0.0);
  // M = 0 or N = 0: nothing to do, nothing touched.
  const Tensor empty_c = Tensor::empty(Shape{0, 6}, DType::kF32, kGpu);
  ops::cuda::matmul(Tensor::empty(Shape{0, 3}, DType::kF32, kGpu), false,
                    random_gpu(Shape{3, 6}, DType::kF32, 6), false, empty_c);
  CUDA_CHECK(cudaDeviceSynchronize());
}

TEST_F(CudaMatmul, CountsFlops) {
  ops::cuda::reset_gemm_stats();
  const Tensor a = random_gpu(Shape{3, 5}, DType::kF32, 7);
  const Tensor b = random_gpu(Shape{5, 4}, DType::kF32, 8);
  const Tensor c = Tensor::empty(Shape{3, 4}, DType::kF32, kGpu);
  ops::cuda::matmul(a, false, b, false, c);
  ops::cuda::matmul(a, false, b, false, c, 1.0, 1.0);
  const ops::GemmStats stats = ops::cuda::gemm_stats();
  EXPECT_EQ(stats.calls, 2);
  EXPECT_EQ(stats.flops, 2 * 2.0 * 3 * 4 * 5);
}

std::string error_of(const std::function<void()>& call) {
  try {
    call();
  } catch (const ShapeError& e) {
    return e.what();
  }
  return "(no ShapeError)";
}

TEST_F(CudaMatmul, RejectsWrongShapesDtypesAndDevices) {
  const Tensor a = random_gpu(Shape{4, 8}, DType::kBF16, 1);
  const Tensor b = random_gpu(Shape{8, 6}, DType::kBF16, 2);
  const Tensor c_bad = Tensor::empty(Shape{4, 5}, DType::kBF16, kGpu);
  const std::string shape_error = error_of([&] { ops::cuda::matmul(a, false, b, false, c_bad); });
  EXPECT_NE(shape_error.find("c [4, 5]"), std::string::npos) << shape_error;
  EXPECT_NE(shape_error.find("expected c (4, 6)"), std::string::npos) << shape_error;
  // Inner dims differ: op(a) (4, 8) against op(b) = b^T (6, 8).
  const Tensor c_4x8 = Tensor::empty(Shape{4, 8}, DType::kBF16, kGpu);
  const std::string inner_error = error_of([&] { ops::cuda::matmul(a, false, b, true, c_4x8); });
  EXPECT_NE(inner_error.find("inner dims"), std::string::npos) << inner_error;

  const Tensor c = Tensor::empty(Shape{4, 6}, DType::kBF16, kGpu);
  EXPECT_THROW(ops::cuda::matmul(a, false, random_gpu(Shape{8, 6}, DType::kF32, 3), false, c),
               ShapeError);
  // f32 inputs write f32 only.
  EXPECT_THROW(ops::cuda::matmul(random_gpu(Shape{4, 8}, DType::kF32, 4), false,
                                 random_gpu(Shape{8, 6}, DType::kF32, 5), false, c),
               ShapeError);
  EXPECT_THROW(ops::cuda::matmul(a, false, b, false, Tensor::empty(Shape{4, 6}, DType::kF64, kGpu)),
               ShapeError);
  EXPECT_THROW(ops::cuda::matmul(a, false, b, false, Tensor::empty(Shape{4, 6}, DType::kBF16)),
               ShapeError);
}

}  // namespace
}  // namespace memento::testing
