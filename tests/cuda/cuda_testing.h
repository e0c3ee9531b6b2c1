// Shared by the CUDA parity tests: the skip on machines without a GPU, random tensors on the
// device, host copies in fp64, and the max-error report that scripts/gpu_check.sh tabulates.
#pragma once

#include <gtest/gtest.h>

#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "core/cuda/check.h"
#include "core/tensor.h"
#include "tests/cuda/tolerances.h"

namespace memento::testing {

inline constexpr Device kGpu{DeviceKind::kCuda, 0};

// Tests in a CudaTest fixture skip themselves, saying so, where no GPU is visible (CI).
class CudaTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!cuda::cuda_available())
      GTEST_SKIP() << "no CUDA device: this test runs the CUDA op against the CPU op on a GPU";
  }
};

// A GPU tensor of `dtype` holding normal(mean, std) values (rounded to dtype).
inline Tensor random_gpu(Shape shape, DType dtype, uint64_t seed, float mean = 0.f,
                         float std = 1.f) {
  Tensor host = Tensor::empty(shape, DType::kF32);
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(mean, std);
  float* p = host.data<float>();
  for (int64_t i = 0; i < host.numel(); ++i) p[i] = normal(rng);
  Tensor gpu = Tensor::empty(shape, dtype, kGpu);
  copy(host, gpu);
  return gpu;
}

// A random GPU tensor of `shape` seen through a view one element into a larger buffer, so that no
// pointer is 16-byte aligned and the ops take their scalar paths. The owner keeps the bytes alive.
struct MisalignedGpu {
  Tensor owner;
  TensorView view;
};
inline MisalignedGpu random_gpu_misaligned(Shape shape, DType dtype, uint64_t seed,
                                           float mean = 0.f, float std = 1.f) {
  MisalignedGpu m;
  m.owner = random_gpu(Shape{shape.numel() + 1}, dtype, seed, mean, std);
  m.view = m.owner.view().flat_range(1, shape);
  return m;
}

// An fp64 CPU copy of any tensor (the exact values it holds).
inline Tensor to_cpu_f64(const TensorView& t) {
  Tensor h = Tensor::empty(t.shape(), DType::kF64);
  copy(t, h);
  return h;
}

inline std::vector<double> values(const TensorView& t) {
  const Tensor h = to_cpu_f64(t);
  const double* p = h.data<double>();
  return {p, p + h.numel()};
}

// Compares the GPU result with the reference, prints "[maxerr] <what> <error>" for the GPU
// check's table, and expects the error within the dtype's tolerance.
inline void expect_parity(const std::string& what, const TensorView& gpu, const TensorView& ref,
                          DType dtype) {
  const double err = relative_max_error(values(gpu), values(ref));
  std::printf("[maxerr] %s %.3e\n", what.c_str(), err);
  EXPECT_LE(err, parity_tolerance(dtype)) << what << " (" << dtype_name(dtype) << ")";
}

// Mean milliseconds of one forward() and one backward() over `iters` calls each, after `warmup`
// calls of both, timed with CUDA events on the default stream (for "[timing]" prints, not tests).
struct ForwardBackwardMs {
  double forward = 0;
  double backward = 0;
};
template <typename Forward, typename Backward>
ForwardBackwardMs time_forward_backward(Forward&& forward, Backward&& backward, int warmup = 3,
                                        int iters = 10) {
  for (int i = 0; i < warmup; ++i) {
    forward();
    backward();
  }
  const cuda::CudaEvent start, mid, stop;
  start.record();
  for (int i = 0; i < iters; ++i) forward();
  mid.record();
  for (int i = 0; i < iters; ++i) backward();
  stop.record();
  stop.synchronize();
  return {mid.elapsed_ms_since(start) / iters, stop.elapsed_ms_since(mid) / iters};
}

}  // namespace memento::testing
