// Embedding lookup on CPU tensors: forward gathers weight rows, backward scatter-adds into the
// weight gradient. Weights fp32 or fp64, token ids i32. kMeta tensors are accepted: shapes are
// checked and the compute (and the id check) is skipped.
#pragma once

#include "core/tensor.h"

namespace memento::ops {

// out[b, t, :] = weight[tokens[b, t], :]. tokens (B, T) i32, weight (V, C), out (B, T, C).
// An id outside [0, V) throws DataError naming the id and its (b, t) position.
void embedding_forward(const TensorView& tokens, const TensorView& weight, const TensorView& out);

// dweight[tokens[b, t], :] += dout[b, t, :]. tokens (B, T) i32, dout (B, T, C), dweight (V, C).
// Deterministic: threads own channel ranges, and each element adds its tokens in (b, t) order.
// Ids are checked as in embedding_forward.
void embedding_backward(const TensorView& tokens, const TensorView& dout,
                        const TensorView& dweight);

}  // namespace memento::ops
