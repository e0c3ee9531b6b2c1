// The global gradient norm's sum of squares over a flat fp32 buffer on the GPU, deterministic:
// a fixed grid writes per-block partials that one block then adds in a fixed order, so the same
// buffer gives the same bits on every run (and the caller reduces it over ranks next).
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "core/tensor.h"

namespace memento::ops::cuda {

// out (1) f32 on the GPU = sum of grads[i]^2 (accumulated in fp32 per thread, fp64 across
// blocks). grads (n) f32 on the same GPU. Stays on the device: clipping can read it there.
void grad_norm_squared(const TensorView& grads, const TensorView& out,
                       cudaStream_t stream = nullptr);

// Launcher on raw device pointers; partial holds grad_norm_partial_count() doubles.
void launch_grad_norm_squared(const float* grads, int64_t n, double* partial, float* out,
                              cudaStream_t stream);
int64_t grad_norm_partial_count();

}  // namespace memento::ops::cuda
