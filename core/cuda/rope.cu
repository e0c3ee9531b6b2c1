#include "core/cuda/rope.h"

#include <cstdint>
#include <limits>

#include "core/cuda/check.h"
#include "core/cuda/kernel_common.cuh"

namespace memento::ops::cuda {
namespace {

using memento::cuda::detail::blocks_for;
using memento::cuda::detail::from_f32;
using memento::cuda::detail::to_f32;

constexpr int kThreads = 256;

// One thread per rotated pair (x_i, x_{i+HS/2}) of one (b, t, h) row, consecutive threads on
// consecutive i (coalesced). Index is uint32_t when every pair index fits: the three divisions
// per pair then cost a fraction of their 64-bit emulation.
template <typename T, typename Index>
__global__ void rope_rotate_pairs(T* __restrict__ x, const float* __restrict__ cos,
                                  const float* __restrict__ sin, Index pairs, Index seq_len,
                                  Index NH, Index half, float direction) {
  const Index stride = static_cast<Index>(gridDim.x) * blockDim.x;
  for (Index p = static_cast<Index>(blockIdx.x) * blockDim.x + threadIdx.x; p < pairs;
       p += stride) {
    const Index i = p % half;
    const Index row = p / half;  // (b * T + t) * NH + h
    const Index t = (row / NH) % seq_len;
    T* lo = x + static_cast<int64_t>(row) * (2 * static_cast<int64_t>(half)) + i;  // x_i
    T* hi = lo + half;                                                             // x_{i+HS/2}
    const float c = cos[static_cast<int64_t>(t) * half + i];
    const float s = direction * sin[static_cast<int64_t>(t) * half + i];
    const float a = to_f32(*lo);
    const float b = to_f32(*hi);
    *lo = from_f32<T>(a * c - b * s);
    *hi = from_f32<T>(b * c + a * s);
  }
}

void check_rope(const TensorView& x, const TensorView& cos, const TensorView& sin, const char* op) {
  memento::cuda::detail::expect_cuda({x, cos, sin}, op);
  MEMENTO_EXPECT(x.ndim() == 4, ShapeError, op, ": x must be (B, T, NH, HS), got ",
                 x.shape().str());
  const int64_t T = x.size(1), HS = x.size(3);
  MEMENTO_EXPECT(HS % 2 == 0, ShapeError, op, ": head size must be even, got ", HS);
  expect_shape(cos, Shape{T, HS / 2}, ::memento::detail::concat(op, ": rope table cos").c_str());
  expect_shape(sin, Shape{T, HS / 2}, ::memento::detail::concat(op, ": rope table sin").c_str());
  expect_dtype(cos, DType::kF32, ::memento::detail::concat(op, ": rope table cos").c_str());
  expect_dtype(sin, DType::kF32, ::memento::detail::concat(op, ": rope table sin").c_str());
}

void rotate(const TensorView& x, const TensorView& cos, const TensorView& sin, float direction,
            const char* op, cudaStream_t stream) {
  check_rope(x, cos, sin, op);
  memento::cuda::detail::dispatch_activation(x.dtype(), op, "x", [&](auto zero) {
    using T = decltype(zero);
    launch_rope(static_cast<T*>(x.raw()), static_cast<const float*>(cos.raw()),
                static_cast<const float*>(sin.raw()), x.size(0), x.size(1), x.size(2), x.size(3),
                direction, stream);
  });
}

}  // namespace

template <typename T>
void launch_rope(T* x, const float* cos, const float* sin, int64_t B, int64_t seq_len, int64_t NH,
                 int64_t HS, float direction, cudaStream_t stream) {
  const int64_t half = HS / 2;
  const int64_t pairs = B * seq_len * NH * half;
  if (pairs == 0) return;
  const unsigned blocks = blocks_for(pairs, kThreads);
  if (pairs <= std::numeric_limits<int32_t>::max()) {
    rope_rotate_pairs<T, uint32_t><<<blocks, kThreads, 0, stream>>>(
        x, cos, sin, static_cast<uint32_t>(pairs), static_cast<uint32_t>(seq_len),
        static_cast<uint32_t>(NH), static_cast<uint32_t>(half), direction);
  } else {
    rope_rotate_pairs<T, int64_t>
        <<<blocks, kThreads, 0, stream>>>(x, cos, sin, pairs, seq_len, NH, half, direction);
  }
  CUDA_CHECK_LAUNCH();
}

template void launch_rope<float>(float*, const float*, const float*, int64_t, int64_t, int64_t,
                                 int64_t, float, cudaStream_t);
template void launch_rope<__nv_bfloat16>(__nv_bfloat16*, const float*, const float*, int64_t,
                                         int64_t, int64_t, int64_t, float, cudaStream_t);

void rope_(const TensorView& x, const TensorView& cos, const TensorView& sin, cudaStream_t stream) {
  rotate(x, cos, sin, 1.f, "cuda::rope_", stream);
}

void rope_backward_(const TensorView& dx, const TensorView& cos, const TensorView& sin,
                    cudaStream_t stream) {
  rotate(dx, cos, sin, -1.f, "cuda::rope_backward_", stream);
}

}  // namespace memento::ops::cuda
