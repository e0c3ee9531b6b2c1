#include "core/cuda/swiglu.h"

#include "core/cuda/check.h"
#include "core/cuda/kernel_common.cuh"

namespace memento::ops::cuda {
namespace {

using memento::cuda::detail::blocks_for;
using memento::cuda::detail::from_f32;
using memento::cuda::detail::to_f32;

constexpr int kThreads = 256;

// Not __restrict__: the backward may run in place.
template <typename T>
__global__ void swiglu_forward_elementwise(const T* g, const T* u, T* h, int64_t n) {
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const float gi = to_f32(g[i]);
    const float s = 1.0f / (1.0f + expf(-gi));
    h[i] = from_f32<T>(gi * s * to_f32(u[i]));
  }
}

template <typename T>
__global__ void swiglu_backward_elementwise(const T* dh, const T* g, const T* u, T* dg, T* du,
                                            int64_t n) {
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const float gi = to_f32(g[i]);
    const float ui = to_f32(u[i]);
    const float dhi = to_f32(dh[i]);
    const float s = 1.0f / (1.0f + expf(-gi));
    // silu'(g) = s + g s (1 - s) = s (1 + g (1 - s)).
    dg[i] = from_f32<T>(dhi * ui * s * (1.0f + gi * (1.0f - s)));
    du[i] = from_f32<T>(dhi * gi * s);
  }
}

}  // namespace

template <typename T>
void launch_swiglu_forward(const T* g, const T* u, T* h, int64_t n, cudaStream_t stream) {
  if (n == 0) return;
  swiglu_forward_elementwise<T><<<blocks_for(n, kThreads), kThreads, 0, stream>>>(g, u, h, n);
  CUDA_CHECK_LAUNCH();
}

template <typename T>
void launch_swiglu_backward(const T* dh, const T* g, const T* u, T* dg, T* du, int64_t n,
                            cudaStream_t stream) {
  if (n == 0) return;
  swiglu_backward_elementwise<T>
      <<<blocks_for(n, kThreads), kThreads, 0, stream>>>(dh, g, u, dg, du, n);
  CUDA_CHECK_LAUNCH();
}

template void launch_swiglu_forward<float>(const float*, const float*, float*, int64_t,
                                           cudaStream_t);
template void launch_swiglu_forward<__nv_bfloat16>(const __nv_bfloat16*, const __nv_bfloat16*,
                                                   __nv_bfloat16*, int64_t, cudaStream_t);
template void launch_swiglu_backward<float>(const float*, const float*, const float*, float*,
                                            float*, int64_t, cudaStream_t);
template void launch_swiglu_backward<__nv_bfloat16>(const __nv_bfloat16*, const __nv_bfloat16*,
                                                    const __nv_bfloat16*, __nv_bfloat16*,
                                                    __nv_bfloat16*, int64_t, cudaStream_t);

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
                     const TensorView& dg, const TensorView& du, cudaStream_t stream) {
  const char* op = "cuda::swiglu_backward";
  memento::cuda::detail::expect_cuda({dh, g, u, dg, du}, op);
  for (const TensorView* t : {&dh, &u, &dg, &du}) {
    expect_shape(*t, g.shape(), "cuda::swiglu_backward: dh, u, dg, du");
    expect_dtype(*t, g.dtype(), "cuda::swiglu_backward: dh, u, dg, du");
  }
  memento::cuda::detail::dispatch_activation(g.dtype(), op, "g", [&](auto zero) {
    using T = decltype(zero);
    launch_swiglu_backward(static_cast<const T*>(dh.raw()), static_cast<const T*>(g.raw()),
                           static_cast<const T*>(u.raw()), static_cast<T*>(dg.raw()),
                           static_cast<T*>(du.raw()), g.numel(), stream);
  });
}

}  // namespace memento::ops::cuda
