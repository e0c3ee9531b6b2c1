// The CUDA sum of squares against an fp64 sum on the CPU, and its run-to-run determinism.
#include "core/cuda/grad_norm.h"

#include <gtest/gtest.h>

#include "tests/cuda/cuda_testing.h"

namespace memento::testing {
namespace {

class CudaGradNorm : public CudaTest {};

TEST_F(CudaGradNorm, MatchesFp64SumAndIsDeterministic) {
  for (int64_t n :
       {int64_t{1}, int64_t{255}, int64_t{4097}, int64_t{(1 << 20) + 3}, int64_t{5'000'000}}) {
    const Tensor g = random_gpu(Shape{n}, DType::kF32, static_cast<uint64_t>(n), 0.f, 0.01f);
    const Tensor out = Tensor::empty(Shape{1}, DType::kF32, kGpu);
    ops::cuda::grad_norm_squared(g, out);
    double ref = 0;
    for (double x : values(g)) ref += x * x;
    const Tensor ref_t = Tensor::empty(Shape{1}, DType::kF64);
    ref_t.data<double>()[0] = ref;
    expect_parity(::memento::detail::concat("grad_norm_squared[", n, "]"), out, ref_t, DType::kF32);
    const std::vector<double> first = values(out);
    ops::cuda::grad_norm_squared(g, out);
    EXPECT_EQ(values(out), first) << "n = " << n;
  }
}

TEST_F(CudaGradNorm, EmptyBufferIsZero) {
  const Tensor g = Tensor::empty(Shape{0}, DType::kF32, kGpu);
  const Tensor out = Tensor::empty(Shape{1}, DType::kF32, kGpu);
  ops::cuda::grad_norm_squared(g, out);
  EXPECT_EQ(values(out)[0], 0.0);
}

}  // namespace
}  // namespace memento::testing
