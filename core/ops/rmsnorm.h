// RMSNorm over the last dimension on CPU tensors (fp32 or fp64). A tensor (..., C) is read as
// rows x C. kMeta tensors are accepted: shapes are checked and the compute is skipped.
#pragma once

#include "core/tensor.h"

namespace memento::ops {

// y = x * rstd * weight with rstd = 1 / sqrt(mean(x^2) + eps), the mean accumulated in fp64.
// x (..., C), weight (C), y (..., C), rstd (rows) where rows = x.numel() / C; all one dtype.
// With `residual` (..., C), first x += residual in place (a residual connection's add, fused):
// x then holds the sum, rounded to its dtype, and y is the norm of that (residual must not alias
// x or y).
// The epsilon as a norm computing in `dtype` adds it: exact in fp64; rounded to fp32 in fp32 and
// narrower compute (as PyTorch adds a Python float to an fp32 tensor, and as the CUDA kernels take
// it), so that an fp32 run keeps the value it always had.
double rmsnorm_eps(DType dtype, double eps);

void rmsnorm_forward(const TensorView& x, const TensorView& weight, double eps, const TensorView& y,
                     const TensorView& rstd, const TensorView* residual = nullptr);

// dx = rstd * (dy * weight - x * rstd^2 * mean(dy * weight * x)) (overwrites dx) and
// dweight += sum over rows of dy * x * rstd, reduced in a fixed order (parallel over channels).
// dy, x, dx (..., C); weight, dweight (C); rstd (rows) as saved by rmsnorm_forward. With
// `residual` (..., C), dx = that + residual: the gradient arriving around the norm through a
// residual connection, summed in the same pass (it must not alias dx).
void rmsnorm_backward(const TensorView& dy, const TensorView& x, const TensorView& weight,
                      const TensorView& rstd, const TensorView& dx, const TensorView& dweight,
                      const TensorView* residual = nullptr);

}  // namespace memento::ops
