// Chunked causal linear attention (LASP-2's Linear-Llama) with an optional fixed per-head decay,
// on CPU tensors (fp32 or fp64). Definition, per query head h reading kv head h / (NH / NKV):
//   o_t = sum_{j <= t} lambda^(t-j) (q_t . k_j) v_j + lambda^(t+1) q_t P
// with identity feature map, no softmax and no scaling. P (HS x HS) is an optional initial state.
// The state after token t is S_t = lambda S_{t-1} + k_t^T v_t (S_{-1} = P), so o_t = q_t S_t and
// the final state is S_{T-1}. Running two halves of a sequence, the second seeded with the first
// one's final state (and the first one's backward with the second one's initial-state gradient),
// equals one run over the whole sequence: LASP-2 seeds the forward with the prefix state of
// earlier ranks and the backward with the suffix gradient of later ranks
// (research/algo-parallel-memory.md 1.2-1.6: its m_r and P_r are lambda times this op's
// zero-seeded final state and initial state; this op's zero-seeded initial-state gradient and its
// dfinal_state are lambda times that section's dP_r^loc and G_r; the Horner recursions
// P <- lambda^C P + m and G <- lambda^C G + dP^loc hold unchanged in this op's convention).
// Computed chunk by chunk: a masked quadratic part inside each chunk plus q times the running
// state, which is accumulated in fp64. Deterministic; parallel over (batch, head).
// kMeta tensors are accepted: shapes are checked and the compute is skipped.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "core/tensor.h"

namespace memento::ops {

// lambda_h = exp(-slope_h) with ALiBi-like slopes slope_h = 2^(-8 (h + 1) / NH), h < NH.
std::vector<double> alibi_decays(int64_t NH);

// States (B, NH, HS, HS) are indexed [b][h][key dim][value dim] and held in this dtype:
// fp64 for fp32 and fp64 activations on the CPU.
DType linear_attention_state_dtype(DType activations);

// q (B, T, NH, HS), k and v (B, T, NKV, HS), out (B, T, NH, HS) overwritten. decay: NH values of
// lambda in (0, 1], or empty for no decay. chunk > 0; T need not be a multiple of it.
// initial_state (B, NH, HS, HS) or a default TensorView for zeros; final_state (B, NH, HS, HS)
// receives S_{T-1} when given (a default TensorView skips it).
void linear_attention_forward(const TensorView& q, const TensorView& k, const TensorView& v,
                              const TensorView& out, std::span<const double> decay, int64_t chunk,
                              const TensorView& initial_state = {},
                              const TensorView& final_state = {});

// Gradients of linear_attention_forward: dq (B, T, NH, HS), dk and dv (B, T, NKV, HS) overwritten
// (dk, dv summed over the query heads of a group in head order). initial_state as in forward;
// dfinal_state (B, NH, HS, HS) is the gradient arriving at the final state (default: zero);
// dinitial_state (B, NH, HS, HS), when given, receives the gradient of the initial state.
void linear_attention_backward(const TensorView& q, const TensorView& k, const TensorView& v,
                               const TensorView& dout, const TensorView& dq, const TensorView& dk,
                               const TensorView& dv, std::span<const double> decay, int64_t chunk,
                               const TensorView& initial_state = {},
                               const TensorView& dfinal_state = {},
                               const TensorView& dinitial_state = {});

}  // namespace memento::ops
