// The SwiGLU gate on CPU tensors (fp32 or fp64): h = silu(g) * u, elementwise, silu(g) =
// g * sigmoid(g). kMeta tensors are accepted: shapes are checked and the compute is skipped.
#pragma once

#include "core/tensor.h"

namespace memento::ops {

// g, u, h (..., F), one shape and dtype.
void swiglu_forward(const TensorView& g, const TensorView& u, const TensorView& h);

// dg = dh * u * silu'(g), du = dh * silu(g) (both overwritten); all (..., F). Each element is
// read before it is written, so dg may alias g (or dh) and du may alias u, for in-place use.
void swiglu_backward(const TensorView& dh, const TensorView& g, const TensorView& u,
                     const TensorView& dg, const TensorView& du);

}  // namespace memento::ops
