// Chunked causal linear attention on CUDA tensors: the GPU twin of core/ops/linear_attention.h
// (same definition, decay, GQA head mapping and state conventions; read that header first).
//   o_t = sum_{j <= t} lambda^(t-j) (q_t . k_j) v_j + lambda^(t+1) q_t P,  S_t = lambda S_{t-1} +
//   k_t^T v_t (S_{-1} = P), final state S_{T-1}; query head h reads kv head h / (NH / NKV).
// Activations are bf16 or fp32 (one dtype for q, k, v, out, dout, dq, dk, dv); states are fp32
// (B, NH, HS, HS) indexed [b][h][key dim][value dim]; every sum is accumulated in fp32.
// One CTA per (batch, query head, 32-column block of the value dimension) scans the chunks in
// order with its state block in shared memory; the backward runs dq (a forward scan), dk and dv
// (reverse scans for the state gradient) in one launch. Deterministic: no atomics; with GQA the
// per-query-head dk and dv are summed per group in head order by a second kernel.
// bf16 tensors with 16-byte aligned data run on tensor cores (wmma): the chunk's scores, the
// state and the decayed values enter the products rounded to bf16, so bf16 results, the fp32
// states included, carry bf16-level error (a few 1e-3 relative). fp32 (and unaligned bf16)
// tensors run in fp32 on CUDA cores.
// HS must be 16, 32, 64 or 128. The GPU processes min(chunk, 64) tokens per tile: the result does
// not depend on the chunking beyond rounding. Outputs must not alias inputs.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>
#include <span>

#include "core/tensor.h"

namespace memento::ops::cuda {

// q (B, T, NH, HS), k and v (B, T, NKV, HS), out (B, T, NH, HS) overwritten. decay: NH values of
// lambda in (0, 1] (at most 128 heads), or empty for no decay. chunk > 0.
// initial_state (B, NH, HS, HS) f32 or a default TensorView for zeros; final_state (B, NH, HS, HS)
// f32 receives S_{T-1} when given.
void linear_attention_forward(const TensorView& q, const TensorView& k, const TensorView& v,
                              const TensorView& out, std::span<const double> decay, int64_t chunk,
                              const TensorView& initial_state = {},
                              const TensorView& final_state = {}, cudaStream_t stream = nullptr);

// Gradients of linear_attention_forward: dq (B, T, NH, HS), dk and dv (B, T, NKV, HS) overwritten
// (dk, dv summed over the query heads of a group in head order). initial_state as in forward;
// dfinal_state (B, NH, HS, HS) f32 is the gradient arriving at the final state (default: zero);
// dinitial_state (B, NH, HS, HS) f32, when given, receives the gradient of the initial state.
void linear_attention_backward(const TensorView& q, const TensorView& k, const TensorView& v,
                               const TensorView& dout, const TensorView& dq, const TensorView& dk,
                               const TensorView& dv, std::span<const double> decay, int64_t chunk,
                               const TensorView& initial_state = {},
                               const TensorView& dfinal_state = {},
                               const TensorView& dinitial_state = {},
                               cudaStream_t stream = nullptr);

}  // namespace memento::ops::cuda
