// The SwiGLU gate on CPU tensors (fp32 or fp64): h = silu(g) * u, elementwise, silu(g) =
// g * sigmoid(g). kMeta tensors are accepted: shapes are checked and the compute is skipped.
#pragma once

#include "core/tensor.h"

namespace memento::ops {

// g, u, h (..., F), one shape and dtype.
void swiglu_forward(const TensorView& g, const TensorView& u, const TensorView& h);

// dg = dh * u * silu'(g), du = dh * silu(g) (both overwritten); all (..., F). With `h`, also
// h = silu(g) * u, the forward's output rebuilt in the same pass (a layer that did not keep it
// needs it for its next weight gradient). Each element is read before any output of it is
// written, so dg may alias g, du may alias u, and h may alias dh, for in-place use.
void swiglu_backward(const TensorView& dh, const TensorView& g, const TensorView& u,
                     const TensorView& dg, const TensorView& du, const TensorView* h = nullptr);

// The stacked form, for a layer that computes gate and up with one GEMM: gu (..., 2F) holds g in
// its first F channels and u in its last F; h and dh (..., F); dgu (..., 2F) receives [dg | du].
// Same math and the same bits per element as the two-tensor ops. dgu may alias gu, h may alias dh.
void swiglu_stacked_forward(const TensorView& gu, const TensorView& h);
void swiglu_stacked_backward(const TensorView& dh, const TensorView& gu, const TensorView& dgu,
                             const TensorView* h = nullptr);

}  // namespace memento::ops
