// Helpers shared by the CUDA kernels in core/cuda/: element loads and stores in fp32, 16-byte
// vector loads and stores, warp sums, grid sizes and the bf16/fp32 dispatch of the ops. Internal
// to core/cuda; not part of the API.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <cstring>

#include "core/tensor.h"

namespace memento::cuda::detail {

constexpr int kWarpSize = 32;
constexpr unsigned kFullMask = 0xffffffffu;

__device__ __forceinline__ float to_f32(float x) { return x; }
__device__ __forceinline__ float to_f32(__nv_bfloat16 x) { return __bfloat162float(x); }

template <typename T>
__device__ __forceinline__ T from_f32(float x);
template <>
__device__ __forceinline__ float from_f32<float>(float x) {
  return x;
}
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

// Elements of T in one 16-byte access: 8 bf16 or 4 f32.
constexpr uintptr_t kVectorBytes = 16;
template <typename T>
constexpr int kVectorWidth = static_cast<int>(kVectorBytes / sizeof(T));

// kN consecutive elements, moved as whole 16-byte words (or as one element when kN == 1).
template <typename T, int kN>
struct Pack {
  T v[kN];
};

// kN == 1: one scalar access. Otherwise whole 16-byte words: p must be 16-byte aligned.
template <int kN, typename T>
__device__ __forceinline__ Pack<T, kN> load_pack(const T* p) {
  Pack<T, kN> r;
  if constexpr (kN == 1) {
    r.v[0] = *p;
  } else {
    static_assert(sizeof(Pack<T, kN>) % sizeof(int4) == 0, "packs are whole 16-byte words");
    constexpr int kWords = sizeof(Pack<T, kN>) / sizeof(int4);
    int4 words[kWords];
#pragma unroll
    for (int w = 0; w < kWords; ++w) words[w] = reinterpret_cast<const int4*>(p)[w];
    memcpy(&r, words, sizeof(r));
  }
  return r;
}

template <int kN, typename T>
__device__ __forceinline__ void store_pack(T* p, const Pack<T, kN>& r) {
  if constexpr (kN == 1) {
    *p = r.v[0];
  } else {
    static_assert(sizeof(Pack<T, kN>) % sizeof(int4) == 0, "packs are whole 16-byte words");
    constexpr int kWords = sizeof(Pack<T, kN>) / sizeof(int4);
    int4 words[kWords];
    memcpy(words, &r, sizeof(r));
#pragma unroll
    for (int w = 0; w < kWords; ++w) reinterpret_cast<int4*>(p)[w] = words[w];
  }
}

// True when p may be read and written in 16-byte words.
inline bool vector_aligned(const void* p) {
  return reinterpret_cast<uintptr_t>(p) % kVectorBytes == 0;
}

__device__ __forceinline__ int64_t global_thread() {
  return static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
}
__device__ __forceinline__ int64_t grid_threads() {
  return static_cast<int64_t>(gridDim.x) * blockDim.x;
}

inline unsigned blocks_for(int64_t n, int threads, int64_t max_blocks = 65535) {
  return static_cast<unsigned>(
      std::max<int64_t>(1, std::min((n + threads - 1) / threads, max_blocks)));
}

// Calls f(T{}) with T = float or __nv_bfloat16 for the activation dtype; anything else is a
// ShapeError naming the op and the tensor.
template <typename F>
void dispatch_activation(DType dtype, const char* op, const char* tensor, F&& f) {
  switch (dtype) {
    case DType::kF32:
      f(float{});
      return;
    case DType::kBF16:
      f(__nv_bfloat16{});
      return;
    default:
      break;
  }
  throw ShapeError(::memento::detail::concat(
      op, ": ", tensor, " must be f32 or bf16 on the GPU, got ", dtype_name(dtype)));
}

// Throws ShapeError unless every tensor is on the current CUDA device (where the op's kernels
// run: one rank per GPU, made current at start-up).
inline void expect_cuda(std::initializer_list<TensorView> tensors, const char* op) {
  int current = 0;
  const cudaError_t status = cudaGetDevice(&current);
  for (const TensorView& t : tensors) {
    MEMENTO_EXPECT(t.device().kind == DeviceKind::kCuda, ShapeError, op,
                   ": expected CUDA tensors, got one on ", device_name(t.device()));
    MEMENTO_EXPECT(status != cudaSuccess || t.device().index == current, ShapeError, op,
                   ": a tensor on ", device_name(t.device()), " while cuda:", current,
                   " is current; every operand must be on the current device");
  }
}

}  // namespace memento::cuda::detail
