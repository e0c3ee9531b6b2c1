// Causal softmax attention with grouped-query heads on CPU tensors (fp32 or fp64), computed in
// tiles with an online softmax: probabilities are never stored as T x T; backward recomputes them
// from the saved per-row log-sum-exp. Deterministic: every output element is reduced by one
// task in a fixed order (no atomics), so results do not depend on the thread count.
// kMeta tensors are accepted: shapes are checked and the compute is skipped.
#pragma once

#include "core/tensor.h"

namespace memento::ops {

// out_i = sum_{j <= i} softmax_j(q_i . k_j / sqrt(HS)) v_j per head; query head h reads kv head
// h / (NH / NKV). q (B, T, NH, HS), k and v (B, T, NKV, HS), out (B, T, NH, HS) overwritten,
// lse (B, NH, T) overwritten with the log-sum-exp of each row's scaled scores. One dtype for all.
void attention_forward(const TensorView& q, const TensorView& k, const TensorView& v,
                       const TensorView& out, const TensorView& lse);

// Gradients of attention_forward given dout (B, T, NH, HS) and the forward's out and lse:
// dq (B, T, NH, HS), dk and dv (B, T, NKV, HS), all overwritten. dK and dV sum over the query
// heads of their group in head order.
void attention_backward(const TensorView& q, const TensorView& k, const TensorView& v,
                        const TensorView& out, const TensorView& lse, const TensorView& dout,
                        const TensorView& dq, const TensorView& dk, const TensorView& dv);

}  // namespace memento::ops
