#include "core/cuda/rope.h"

#include <cstdint>
#include <limits>

#include "core/cuda/check.h"
#include "core/cuda/kernel_common.cuh"

namespace memento::ops::cuda {
namespace {

using memento::cuda::detail::blocks_for;
using memento::cuda::detail::from_f32;
using memento::cuda::detail::kVectorWidth;
using memento::cuda::detail::load_pack;
using memento::cuda::detail::Pack;
using memento::cuda::detail::store_pack;
using memento::cuda::detail::to_f32;
using memento::cuda::detail::vector_aligned;

constexpr int kThreads = 256;

// One thread per kN consecutive rotated pairs (x_i, x_{i+HS/2}), i = i0 .. i0 + kN - 1, of one
// (b, t, h) row: two packs of x and one of cos and sin. Consecutive threads take consecutive i0,
// then consecutive rows (coalesced). kN > 1 needs HS/2 % kN == 0 and x, cos, sin 16-byte aligned;
// kN == 1 is one pair per thread, any even HS. Index is uint32_t when every pair index fits: the
// three divisions per item then cost a fraction of their 64-bit emulation.
template <typename T, int kN, typename Index>
__global__ void rope_rotate_pairs(T* __restrict__ x, const float* __restrict__ cos,
                                  const float* __restrict__ sin, Index items, Index seq_len,
                                  Index NH, Index half, float direction) {
  const Index packs_per_half = half / kN;
  const Index stride = static_cast<Index>(gridDim.x) * blockDim.x;
  for (Index p = static_cast<Index>(blockIdx.x) * blockDim.x + threadIdx.x; p < items;
       p += stride) {
    const Index i = (p % packs_per_half) * kN;
    const Index row = p / packs_per_half;  // (b * T + t) * NH + h
    const Index t = (row / NH) % seq_len;
    T* lo = x + static_cast<int64_t>(row) * (2 * static_cast<int64_t>(half)) + i;  // x_i
    T* hi = lo + half;                                                             // x_{i+HS/2}
    const int64_t table = static_cast<int64_t>(t) * half + i;                      // [t, i]
    const Pack<float, kN> c = load_pack<kN>(cos + table);
    const Pack<float, kN> sn = load_pack<kN>(sin + table);
    Pack<T, kN> a = load_pack<kN>(lo);
    Pack<T, kN> b = load_pack<kN>(hi);
#pragma unroll
    for (int j = 0; j < kN; ++j) {
      const float s = direction * sn.v[j];
      const float aj = to_f32(a.v[j]);
      const float bj = to_f32(b.v[j]);
      a.v[j] = from_f32<T>(aj * c.v[j] - bj * s);
      b.v[j] = from_f32<T>(bj * c.v[j] + aj * s);
    }
    store_pack<kN>(lo, a);
    store_pack<kN>(hi, b);
  }
}

template <typename T, int kN>
void launch_rope_packs(T* x, const float* cos, const float* sin, int64_t pairs, int64_t seq_len,
                       int64_t NH, int64_t half, float direction, cudaStream_t stream) {
  const int64_t items = pairs / kN;
  const unsigned blocks = blocks_for(items, kThreads);
  if (pairs <= std::numeric_limits<int32_t>::max()) {
    rope_rotate_pairs<T, kN, uint32_t><<<blocks, kThreads, 0, stream>>>(
        x, cos, sin, static_cast<uint32_t>(items), static_cast<uint32_t>(seq_len),
        static_cast<uint32_t>(NH), static_cast<uint32_t>(half), direction);
  } else {
    rope_rotate_pairs<T, kN, int64_t>
        <<<blocks, kThreads, 0, stream>>>(x, cos, sin, items, seq_len, NH, half, direction);
  }
  CUDA_CHECK_LAUNCH();
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
  constexpr int kN = kVectorWidth<T>;  // 8 bf16 or 4 f32: one 16-byte word of x per half
  if (half % kN == 0 && vector_aligned(x) && vector_aligned(cos) && vector_aligned(sin))
    launch_rope_packs<T, kN>(x, cos, sin, pairs, seq_len, NH, half, direction, stream);
  else
    launch_rope_packs<T, 1>(x, cos, sin, pairs, seq_len, NH, half, direction, stream);
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
