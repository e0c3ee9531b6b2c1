// RMSNorm over the last dimension on CUDA tensors: the GPU twin of core/ops/rmsnorm.h.
// Activations are bf16 or fp32; the weight, its gradient and the statistics are fp32.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "core/tensor.h"

namespace memento::ops::cuda {

// y = x * rstd * weight, rstd = 1 / sqrt(mean(x^2) + eps) accumulated in fp32.
// x (..., C) bf16|f32, weight (C) f32, y (..., C) as x, rstd (rows) f32; rows = x.numel() / C.
// With `residual` (..., C, x's dtype, aliasing neither x nor y), first x += residual in place,
// rounded to x's dtype: x holds the sum and y is its norm.
void rmsnorm_forward(const TensorView& x, const TensorView& weight, double eps, const TensorView& y,
                     const TensorView& rstd, const TensorView* residual = nullptr,
                     cudaStream_t stream = nullptr);

// dx = rstd * (dy * weight - x * rstd^2 * mean(dy * weight * x)) (overwrites dx);
// dweight += sum over rows of dy * x * rstd, from per-row-block partials reduced in a fixed order
// (deterministic). dy, x, dx (..., C) one dtype bf16|f32; weight, dweight (C) f32; rstd (rows)
// f32 as saved by rmsnorm_forward. With `residual` (..., C, x's dtype, not aliasing dx),
// dx = that + residual, summed in fp32 before dx is rounded.
void rmsnorm_backward(const TensorView& dy, const TensorView& x, const TensorView& weight,
                      const TensorView& rstd, const TensorView& dx, const TensorView& dweight,
                      const TensorView* residual = nullptr, cudaStream_t stream = nullptr);

// Launchers on raw device pointers (T = float or __nv_bfloat16); they check the launch.
// residual may be null; with it, x is updated in place.
template <typename T>
void launch_rmsnorm_forward(T* x, const T* residual, const float* weight, float eps, T* y,
                            float* rstd, int64_t rows, int64_t C, cudaStream_t stream);
// partial: scratch of rmsnorm_backward_partial_rows(rows) x C floats; residual may be null.
template <typename T>
void launch_rmsnorm_backward(const T* dy, const T* x, const float* weight, const float* rstd,
                             const T* residual, T* dx, float* dweight, float* partial, int64_t rows,
                             int64_t C, cudaStream_t stream);
int64_t rmsnorm_backward_partial_rows(int64_t rows);

}  // namespace memento::ops::cuda
