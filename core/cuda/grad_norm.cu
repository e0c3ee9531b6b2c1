#include "core/cuda/grad_norm.h"

#include "core/cuda/check.h"
#include "core/cuda/kernel_common.cuh"

namespace memento::ops::cuda {
namespace {

using memento::cuda::detail::kWarpSize;

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / kWarpSize;
// A fixed number of blocks (not one per SM count) keeps the summation order independent of the
// GPU model; 1024 blocks fill an H100's 132 SMs several times over.
constexpr int kPartialBlocks = 1024;

__device__ double block_sum(double x) {
  __shared__ double warp_totals[kWarps];
  for (int offset = kWarpSize / 2; offset > 0; offset /= 2)
    x += __shfl_xor_sync(memento::cuda::detail::kFullMask, x, offset);
  const int warp = static_cast<int>(threadIdx.x) / kWarpSize;
  if (threadIdx.x % kWarpSize == 0) warp_totals[warp] = x;
  __syncthreads();
  double total = 0;
  if (threadIdx.x == 0)
    for (int w = 0; w < kWarps; ++w) total += warp_totals[w];
  return total;  // valid in thread 0
}

__global__ void sum_squares_block_partials(const float* __restrict__ g, int64_t n,
                                           double* __restrict__ partial) {
  float acc = 0.f;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * kThreads)
    acc += g[i] * g[i];
  // block_sum reduces across lanes itself: summing the warp first counted every value 32 times.
  const double total = block_sum(static_cast<double>(acc));
  if (threadIdx.x == 0) partial[blockIdx.x] = total;
}

__global__ void sum_partials_one_block(const double* __restrict__ partial, int count,
                                       float* __restrict__ out) {
  double acc = 0;
  for (int i = static_cast<int>(threadIdx.x); i < count; i += kThreads) acc += partial[i];
  const double total = block_sum(acc);
  if (threadIdx.x == 0) *out = static_cast<float>(total);
}

}  // namespace

int64_t grad_norm_partial_count() { return kPartialBlocks; }

void launch_grad_norm_squared(const float* grads, int64_t n, double* partial, float* out,
                              cudaStream_t stream) {
  sum_squares_block_partials<<<kPartialBlocks, kThreads, 0, stream>>>(grads, n, partial);
  CUDA_CHECK_LAUNCH();
  sum_partials_one_block<<<1, kThreads, 0, stream>>>(partial, kPartialBlocks, out);
  CUDA_CHECK_LAUNCH();
}

void grad_norm_squared(const TensorView& grads, const TensorView& out, cudaStream_t stream) {
  const char* op = "cuda::grad_norm_squared";
  memento::cuda::detail::expect_cuda({grads, out}, op);
  MEMENTO_EXPECT(grads.ndim() == 1, ShapeError, op, ": grads must be flat, got ",
                 grads.shape().str());
  expect_dtype(grads, DType::kF32, "cuda::grad_norm_squared: grads");
  expect_shape(out, Shape{1}, "cuda::grad_norm_squared: out");
  expect_dtype(out, DType::kF32, "cuda::grad_norm_squared: out");
  const Tensor partial =
      Tensor::empty(Shape{kPartialBlocks}, DType::kF64, grads.device());  // (blocks,)
  launch_grad_norm_squared(static_cast<const float*>(grads.raw()), grads.numel(),
                           partial.data<double>(), static_cast<float*>(out.raw()), stream);
}

}  // namespace memento::ops::cuda
