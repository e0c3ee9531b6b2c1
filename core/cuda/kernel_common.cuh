// Helpers shared by the CUDA kernels in core/cuda/: element loads and stores in fp32, warp sums,
// grid sizes and the bf16/fp32 dispatch of the ops. Internal to core/cuda; not part of the API.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

#include "core/tensor.h"

namespace memento::cuda::detail {

constexpr int kWarpSize = 32;
constexpr unsigned kFullMask = 0xffffffffu;

__device__ __forceinline__ float to_f32(float x) { return x; }
__device__ __forceinline__ float to_f32(__nv_bfloat16 x) { return __bfloat162float(x); }

template <typename T>
__device__ __forceinline__ T from_f32(float x);
template <>
__device__ __forceinline__ float from_f32<float>(float x) { return x; }
template <>
__device__ __forceinline__ __nv_bfloat16 from_f32<__nv_bfloat16>(float x) {
  return __float2bfloat16_rn(x);
}

// Sum over the 32 lanes, the same butterfly order on every call; every lane gets the result.
template <typename T>
__device__ __forceinline__ T warp_sum(T x) {
  for (int offset = kWarpSize / 2; offset > 0; offset /= 2)
    x += __shfl_xor_sync(kFullMask, x, offset);
  return x;
}

inline unsigned blocks_for(int64_t n, int threads, int64_t max_blocks = 65535) {
  return static_cast<unsigned>(std::max<int64_t>(1, std::min((n + threads - 1) / threads,
                                                             max_blocks)));
}

// Calls f(T{}) with T = float or __nv_bfloat16 for the activation dtype; anything else is a
// ShapeError naming the op and the tensor.
template <typename F>
void dispatch_activation(DType dtype, const char* op, const char* tensor, F&& f) {
  switch (dtype) {
    case DType::kF32: f(float{}); return;
    case DType::kBF16: f(__nv_bfloat16{}); return;
    default: break;
  }
  throw ShapeError(::memento::detail::concat(op, ": ", tensor,
                                             " must be f32 or bf16 on the GPU, got ",
                                             dtype_name(dtype)));
}

// Throws ShapeError unless every tensor is on a CUDA device.
inline void expect_cuda(std::initializer_list<TensorView> tensors, const char* op) {
  for (const TensorView& t : tensors)
    MEMENTO_EXPECT(t.device().kind == DeviceKind::kCuda, ShapeError, op,
                   ": expected CUDA tensors, got one on ", device_name(t.device()));
}

}  // namespace memento::cuda::detail
