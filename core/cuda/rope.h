// Rotary position embedding on CUDA tensors: the GPU twin of core/ops/rope.h (Hugging Face
// rotate-half convention). Activations bf16 or fp32, rotated in place with fp32 math; the cos and
// sin tables are fp32 on the GPU (ops::rope_table(T, HS, theta, DType::kF32, gpu)).
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "core/tensor.h"

namespace memento::ops::cuda {

// x (B, T, NH, HS) bf16|f32, in place: for i < HS/2, x_i' = x_i cos - x_{i+HS/2} sin and
// x_{i+HS/2}' = x_{i+HS/2} cos + x_i sin, with cos, sin (T, HS/2) f32 at [t, i]. HS even.
void rope_(const TensorView& x, const TensorView& cos, const TensorView& sin,
           cudaStream_t stream = nullptr);

// Backward of rope_: dx (B, T, NH, HS) turned back by the inverse rotation (sin negated), in place.
void rope_backward_(const TensorView& dx, const TensorView& cos, const TensorView& sin,
                    cudaStream_t stream = nullptr);

// Launcher on raw device pointers (T = float or __nv_bfloat16; seq_len is the shape's T);
// direction +1 forward, -1 backward. Checks the launch.
template <typename T>
void launch_rope(T* x, const float* cos, const float* sin, int64_t B, int64_t seq_len, int64_t NH,
                 int64_t HS, float direction, cudaStream_t stream);

}  // namespace memento::ops::cuda
