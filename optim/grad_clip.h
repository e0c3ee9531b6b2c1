// Global gradient-norm clipping over the flat gradient buffer.
#pragma once

#include "core/tensor.h"

namespace memento::optim {

// The L2 norm of all gradients, accumulated in fp64 in a fixed order (deterministic).
double global_grad_norm(const TensorView& flat_grads);

// Scales the gradients by max_norm / norm when norm > max_norm (max_norm <= 0: no clipping).
// Returns the factor applied (1 when not clipped).
double clip_grad_norm(const TensorView& flat_grads, double norm, double max_norm);

}  // namespace memento::optim
