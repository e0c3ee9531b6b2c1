// Fused AdamW over flat fp32 buffers on the GPU (ARCHITECTURE contract 1: the buffers are the
// rank's flat parameter, gradient and state buffers, or ranges of them). The update matches
// optim::AdamW on the CPU: m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2;
// p = p (1 - lr wd) - lr/bias1 * m / (sqrt(v) / sqrt(bias2) + eps), with g the gradient times
// grad_scale (global-norm clipping's factor, applied here instead of in a pass of its own).
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "core/tensor.h"

namespace memento::ops::cuda {

struct AdamWHyper {
  double lr = 0;
  double beta1 = 0.9;
  double beta2 = 0.95;
  double eps = 1e-8;
  double weight_decay = 0;  // for this range; the caller splits decayed and undecayed ranges
  int64_t step = 1;         // the update being taken, from 1 (for the bias corrections)
  double grad_scale = 1;    // the gradients are read multiplied by this (rounded to fp32 once)
};

// Updates params, exp_avg and exp_avg_sq in place from grads; all (n) f32 on one GPU. When
// params_bf16 is given (a view with a non-null pointer), it receives the updated weights in bf16.
void adamw_step(const TensorView& params, const TensorView& grads, const TensorView& exp_avg,
                const TensorView& exp_avg_sq, const TensorView& params_bf16, const AdamWHyper& h,
                cudaStream_t stream = nullptr);

// Launcher on raw device pointers; params_bf16 (uint16 bf16 bits) may be null. Checks the launch.
void launch_adamw_flat(float* params, const float* grads, float* exp_avg, float* exp_avg_sq,
                       void* params_bf16, int64_t n, const AdamWHyper& h, cudaStream_t stream);

}  // namespace memento::ops::cuda
