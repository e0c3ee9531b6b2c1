// Causal softmax attention with grouped-query heads on CUDA tensors: the GPU twin of
// core/ops/attention.h. bf16 with HS in {32, 64, 128} runs fused flash-attention kernels on the
// tensor cores (FlashAttention-2 style: online softmax in fp32, probabilities never stored);
// any other head size up to 256, and fp32, run a simple warp-per-row kernel in fp32. Both are
// deterministic: every output element is reduced by one thread in a fixed order (no atomics).
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "core/tensor.h"

namespace memento::ops::cuda {

// The sizes of one attention call: q (B, T, NH, HS), k and v (B, T, NKV, HS).
struct AttentionDims {
  int64_t B, T, NH, NKV, HS;
  int64_t group() const { return NH / NKV; }  // query heads per key/value head
};

// The largest head size the GPU kernels take.
inline constexpr int64_t kMaxAttentionHeadSize = 256;

// out_i = sum_{j <= i} softmax_j(q_i . k_j / sqrt(HS)) v_j per head; query head h reads kv head
// h / (NH / NKV). q (B, T, NH, HS), k and v (B, T, NKV, HS), out (B, T, NH, HS), one dtype
// bf16|f32; lse (B, NH, T) f32, the natural log-sum-exp of each row's scaled scores. out and lse
// are overwritten. 1 <= HS <= 256.
void attention_forward(const TensorView& q, const TensorView& k, const TensorView& v,
                       const TensorView& out, const TensorView& lse, cudaStream_t stream = nullptr);

// Gradients of attention_forward given dout (B, T, NH, HS) and the forward's out and lse:
// dq (B, T, NH, HS), dk and dv (B, T, NKV, HS), all overwritten; dk and dv sum over the query
// heads of their group. q, k, v, out, dout, dq, dk, dv one dtype bf16|f32; lse f32. Uses a
// (B, NH, T) f32 scratch from the device pool.
void attention_backward(const TensorView& q, const TensorView& k, const TensorView& v,
                        const TensorView& out, const TensorView& lse, const TensorView& dout,
                        const TensorView& dq, const TensorView& dk, const TensorView& dv,
                        cudaStream_t stream = nullptr);

// Launchers on raw device pointers (T = float or __nv_bfloat16), dense in the layouts above; they
// pick the kernel (flash for bf16, HS in {32, 64, 128} and 16-byte aligned pointers) and check
// the launch. delta: scratch of B * NH * T floats.
template <typename T>
void launch_attention_forward(const T* q, const T* k, const T* v, T* out, float* lse,
                              AttentionDims d, cudaStream_t stream);
template <typename T>
void launch_attention_backward(const T* q, const T* k, const T* v, const T* out, const float* lse,
                               const T* dout, T* dq, T* dk, T* dv, float* delta, AttentionDims d,
                               cudaStream_t stream);

}  // namespace memento::ops::cuda
