// Embedding lookup on CUDA tensors: the GPU twin of core/ops/embedding.h. The table and the
// activations are bf16 or fp32; the weight gradient is fp32. Token ids are copied to the host
// (synchronously: B * T int32) and checked there, so a bad id is a DataError, never a fault.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "core/tensor.h"

namespace memento::ops::cuda {

// out[b, t, :] = weight[tokens[b, t], :]. tokens (B, T) i32, weight (V, C) bf16|f32,
// out (B, T, C) as weight. An id outside [0, V) throws DataError naming the id and its (b, t).
void embedding_forward(const TensorView& tokens, const TensorView& weight, const TensorView& out,
                       cudaStream_t stream = nullptr);

// dweight[tokens[b, t], :] += dout[b, t, :]. tokens (B, T) i32, dout (B, T, C) bf16|f32,
// dweight (V, C) f32. Deterministic: positions are grouped by id on the host (counting sort) and
// one block per distinct id adds its positions in (b, t) order in fp32, starting from dweight,
// with one read-modify-write per element (the CPU op's order). Ids are checked as in the forward.
void embedding_backward(const TensorView& tokens, const TensorView& dout, const TensorView& dweight,
                        cudaStream_t stream = nullptr);

// Launchers on raw device pointers (T = float or __nv_bfloat16); they check the launch and
// trust the ids. N = B * T rows of C channels.
template <typename T>
void launch_embedding_forward(const int32_t* tokens, const T* weight, T* out, int64_t N, int64_t C,
                              cudaStream_t stream);
// groups: segment_begin (U + 1) | segment_id (U) | positions (N), int32, as built on the host:
// the positions of id segment_id[k] are positions[segment_begin[k] .. segment_begin[k + 1]),
// ascending.
template <typename T>
void launch_embedding_backward(const int32_t* groups, int64_t U, const T* dout, float* dweight,
                               int64_t C, cudaStream_t stream);

}  // namespace memento::ops::cuda
