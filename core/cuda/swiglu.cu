#include "core/cuda/swiglu.h"

#include "core/cuda/check.h"
#include "core/cuda/kernel_common.cuh"

namespace memento::ops::cuda {
namespace {

using memento::cuda::detail::blocks_for;
using memento::cuda::detail::from_f32;
using memento::cuda::detail::global_thread;
using memento::cuda::detail::grid_threads;
using memento::cuda::detail::load_pack;
using memento::cuda::detail::Pack;
using memento::cuda::detail::store_pack;
using memento::cuda::detail::to_f32;
using memento::cuda::detail::vector_aligned;

constexpr int kThreads = 256;
// Elements per vectorised access: 16 bytes of bf16, 32 of f32 (one or two 16-byte words).
constexpr int kPack = 8;
// 2048 x 256 threads fill an H200's 132 SMs several times over; larger tensors loop.
constexpr int64_t kMaxBlocks = 2048;

// The fp32 math of one element, shared by the vectorised and the scalar walks.
__device__ __forceinline__ float swiglu_h(float g, float u) {
  const float s = 1.0f / (1.0f + expf(-g));
  return g * s * u;
}

struct SwigluGrads {
  float dg, du;
};
__device__ __forceinline__ SwigluGrads swiglu_grads(float dh, float g, float u) {
  const float s = 1.0f / (1.0f + expf(-g));
  // silu'(g) = s + g s (1 - s) = s (1 + g (1 - s)).
  return {dh * u * s * (1.0f + g * (1.0f - s)), dh * g * s};
}

// Each kernel walks n / kN packs with a grid-stride loop, then the n % kN tail elements one by
// one (kN == 1: every element, for buffers that are not 16-byte aligned). Not __restrict__: the
// backward may run in place; every pack is read whole before any of it is written.
template <typename T, int kN>
__global__ void swiglu_forward_elementwise(const T* g, const T* u, T* h, int64_t n) {
  const int64_t packs = n / kN;
  for (int64_t i = global_thread(); i < packs; i += grid_threads()) {
    const Pack<T, kN> gp = load_pack<kN>(g + i * kN);
    const Pack<T, kN> up = load_pack<kN>(u + i * kN);
    Pack<T, kN> hp;
#pragma unroll
    for (int j = 0; j < kN; ++j) hp.v[j] = from_f32<T>(swiglu_h(to_f32(gp.v[j]), to_f32(up.v[j])));
    store_pack<kN>(h + i * kN, hp);
  }
  for (int64_t i = packs * kN + global_thread(); i < n; i += grid_threads())
    h[i] = from_f32<T>(swiglu_h(to_f32(g[i]), to_f32(u[i])));
}

template <typename T, int kN>
__global__ void swiglu_backward_elementwise(const T* dh, const T* g, const T* u, T* dg, T* du, T* h,
                                            int64_t n) {
  const int64_t packs = n / kN;
  for (int64_t i = global_thread(); i < packs; i += grid_threads()) {
    const Pack<T, kN> dhp = load_pack<kN>(dh + i * kN);
    const Pack<T, kN> gp = load_pack<kN>(g + i * kN);
    const Pack<T, kN> up = load_pack<kN>(u + i * kN);
    Pack<T, kN> dgp, dup, hp;
#pragma unroll
    for (int j = 0; j < kN; ++j) {
      const float gj = to_f32(gp.v[j]), uj = to_f32(up.v[j]);
      const SwigluGrads d = swiglu_grads(to_f32(dhp.v[j]), gj, uj);
      dgp.v[j] = from_f32<T>(d.dg);
      dup.v[j] = from_f32<T>(d.du);
      if (h) hp.v[j] = from_f32<T>(swiglu_h(gj, uj));
    }
    store_pack<kN>(dg + i * kN, dgp);
    store_pack<kN>(du + i * kN, dup);
    if (h) store_pack<kN>(h + i * kN, hp);
  }
  for (int64_t i = packs * kN + global_thread(); i < n; i += grid_threads()) {
    const float gi = to_f32(g[i]), ui = to_f32(u[i]);
    const SwigluGrads d = swiglu_grads(to_f32(dh[i]), gi, ui);
    dg[i] = from_f32<T>(d.dg);
    du[i] = from_f32<T>(d.du);
    if (h) h[i] = from_f32<T>(swiglu_h(gi, ui));
  }
}

// Blocks for a grid-stride walk over n elements in packs of kN (at least one: the tail).
template <int kN>
unsigned grid_for(int64_t n) {
  return blocks_for(n / kN, kThreads, kMaxBlocks);
}

}  // namespace

template <typename T>
void launch_swiglu_forward(const T* g, const T* u, T* h, int64_t n, cudaStream_t stream) {
  if (n == 0) return;
  if (vector_aligned(g) && vector_aligned(u) && vector_aligned(h))
    swiglu_forward_elementwise<T, kPack><<<grid_for<kPack>(n), kThreads, 0, stream>>>(g, u, h, n);
  else
    swiglu_forward_elementwise<T, 1><<<grid_for<1>(n), kThreads, 0, stream>>>(g, u, h, n);
  CUDA_CHECK_LAUNCH();
}

template <typename T>
void launch_swiglu_backward(const T* dh, const T* g, const T* u, T* dg, T* du, T* h, int64_t n,
                            cudaStream_t stream) {
  if (n == 0) return;
  if (vector_aligned(dh) && vector_aligned(g) && vector_aligned(u) && vector_aligned(dg) &&
      vector_aligned(du) && (h == nullptr || vector_aligned(h)))
    swiglu_backward_elementwise<T, kPack>
        <<<grid_for<kPack>(n), kThreads, 0, stream>>>(dh, g, u, dg, du, h, n);
  else
    swiglu_backward_elementwise<T, 1>
        <<<grid_for<1>(n), kThreads, 0, stream>>>(dh, g, u, dg, du, h, n);
  CUDA_CHECK_LAUNCH();
}

template void launch_swiglu_forward<float>(const float*, const float*, float*, int64_t,
                                           cudaStream_t);
template void launch_swiglu_forward<__nv_bfloat16>(const __nv_bfloat16*, const __nv_bfloat16*,
                                                   __nv_bfloat16*, int64_t, cudaStream_t);
template void launch_swiglu_backward<float>(const float*, const float*, const float*, float*,
                                            float*, float*, int64_t, cudaStream_t);
template void launch_swiglu_backward<__nv_bfloat16>(const __nv_bfloat16*, const __nv_bfloat16*,
                                                    const __nv_bfloat16*, __nv_bfloat16*,
                                                    __nv_bfloat16*, __nv_bfloat16*, int64_t,
                                                    cudaStream_t);

void swiglu_forward(const TensorView& g, const TensorView& u, const TensorView& h,
                    cudaStream_t stream) {
  const char* op = "cuda::swiglu_forward";
  memento::cuda::detail::expect_cuda({g, u, h}, op);
  expect_shape(u, g.shape(), "cuda::swiglu_forward: u");
  expect_shape(h, g.shape(), "cuda::swiglu_forward: h");
  expect_dtype(u, g.dtype(), "cuda::swiglu_forward: u");
  expect_dtype(h, g.dtype(), "cuda::swiglu_forward: h");
  memento::cuda::detail::dispatch_activation(g.dtype(), op, "g", [&](auto zero) {
    using T = decltype(zero);
    launch_swiglu_forward(static_cast<const T*>(g.raw()), static_cast<const T*>(u.raw()),
                          static_cast<T*>(h.raw()), g.numel(), stream);
  });
}

void swiglu_backward(const TensorView& dh, const TensorView& g, const TensorView& u,
                     const TensorView& dg, const TensorView& du, const TensorView* h,
                     cudaStream_t stream) {
  const char* op = "cuda::swiglu_backward";
  memento::cuda::detail::expect_cuda({dh, g, u, dg, du}, op);
  for (const TensorView* t : {&dh, &u, &dg, &du}) {
    expect_shape(*t, g.shape(), "cuda::swiglu_backward: dh, u, dg, du");
    expect_dtype(*t, g.dtype(), "cuda::swiglu_backward: dh, u, dg, du");
  }
  if (h) {
    memento::cuda::detail::expect_cuda({*h}, op);
    expect_shape(*h, g.shape(), "cuda::swiglu_backward: h");
    expect_dtype(*h, g.dtype(), "cuda::swiglu_backward: h");
  }
  memento::cuda::detail::dispatch_activation(g.dtype(), op, "g", [&](auto zero) {
    using T = decltype(zero);
    launch_swiglu_backward(static_cast<const T*>(dh.raw()), static_cast<const T*>(g.raw()),
                           static_cast<const T*>(u.raw()), static_cast<T*>(dg.raw()),
                           static_cast<T*>(du.raw()), h ? static_cast<T*>(h->raw()) : nullptr,
                           g.numel(), stream);
  });
}

}  // namespace memento::ops::cuda
