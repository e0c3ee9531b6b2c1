// The SwiGLU gate on CUDA tensors: the GPU twin of core/ops/swiglu.h. h = silu(g) * u with
// silu(g) = g * sigmoid(g), elementwise, computed in fp32 for bf16 or fp32 tensors.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "core/tensor.h"

namespace memento::ops::cuda {

// g, u, h (..., F), one shape and dtype (bf16|f32).
void swiglu_forward(const TensorView& g, const TensorView& u, const TensorView& h,
                    cudaStream_t stream = nullptr);

// dg = dh * u * silu'(g), du = dh * silu(g) (both overwritten); all (..., F), one dtype. With
// `h`, also h = silu(g) * u, bit for bit what swiglu_forward writes. Each element is read before
// any output of it is written, so dg may alias g, du may alias u and h may alias dh.
void swiglu_backward(const TensorView& dh, const TensorView& g, const TensorView& u,
                     const TensorView& dg, const TensorView& du, const TensorView* h = nullptr,
                     cudaStream_t stream = nullptr);

// The stacked form, for a layer that computes gate and up with one GEMM: gu (..., 2F) holds g in
// its first F channels and u in its last F; h and dh (..., F); dgu (..., 2F) receives [dg | du].
// Same math and the same bits per element as the two-tensor ops. dgu may alias gu, h may alias dh.
void swiglu_stacked_forward(const TensorView& gu, const TensorView& h,
                            cudaStream_t stream = nullptr);
void swiglu_stacked_backward(const TensorView& dh, const TensorView& gu, const TensorView& dgu,
                             const TensorView* h = nullptr, cudaStream_t stream = nullptr);

// Launchers on raw device pointers (T = float or __nv_bfloat16); they check the launch.
template <typename T>
void launch_swiglu_forward(const T* g, const T* u, T* h, int64_t n, cudaStream_t stream);
// h may be null (not written).
template <typename T>
void launch_swiglu_backward(const T* dh, const T* g, const T* u, T* dg, T* du, T* h, int64_t n,
                            cudaStream_t stream);

}  // namespace memento::ops::cuda
