// Global gradient-norm clipping over the flat gradient buffer.
#pragma once

#include "core/tensor.h"

namespace memento::optim {

// The L2 norm of all gradients, accumulated in fp64 in a fixed order (deterministic).
double global_grad_norm(const TensorView& flat_grads);

// The factor global-norm clipping scales the gradients by: max_norm / norm when norm > max_norm,
// else 1 (max_norm <= 0: no clipping). The trainer hands it to the optimizer, which applies it
// as it reads the gradients (optim::AdamW::step's grad_scale).
double clip_factor(double norm, double max_norm);

// Scales the gradients by clip_factor(norm, max_norm) in place; returns the factor.
double clip_grad_norm(const TensorView& flat_grads, double norm, double max_norm);

}  // namespace memento::optim
