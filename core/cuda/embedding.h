// Embedding lookup on CUDA tensors: the GPU twin of core/ops/embedding.h. The table and the
// activations are bf16 or fp32; the weight gradient is fp32. The forward copies the token ids to
// the host (synchronously: B * T int32) and checks them there, so a bad id is a DataError, never a
// fault; the backward, asynchronous, trusts the ids the forward checked.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

#include "core/tensor.h"

namespace memento::ops::cuda {

// out[b, t, :] = weight[tokens[b, t], :]. tokens (B, T) i32, weight (V, C) bf16|f32,
// out (B, T, C) as weight. An id outside [0, V) throws DataError naming the id and its (b, t).
void embedding_forward(const TensorView& tokens, const TensorView& weight, const TensorView& out,
                       cudaStream_t stream = nullptr);

// dweight[tokens[b, t], :] += dout[b, t, :]. tokens (B, T) i32, dout (B, T, C) bf16|f32,
// dweight (V, C) f32. Deterministic and asynchronous (no copy to the host, no wait): the positions
// are sorted by id on the device (a stable radix sort) and one block per distinct id adds its
// positions in (b, t) order in fp32, starting from dweight, with one read-modify-write per element
// (the CPU op's order). The ids are not checked: the forward checked them. An id outside [0, V)
// is skipped, never written. Allocates 16 * B * T bytes of scratch plus the sort's few KiB.
void embedding_backward(const TensorView& tokens, const TensorView& dout, const TensorView& dweight,
                        cudaStream_t stream = nullptr);

// Launchers on raw device pointers (T = float or __nv_bfloat16); they check the launch and
// trust the ids. N = B * T rows of C channels.
template <typename T>
void launch_embedding_forward(const int32_t* tokens, const T* weight, T* out, int64_t N, int64_t C,
                              cudaStream_t stream);
// Bytes of device scratch launch_embedding_backward needs for N ids in [0, V): the sort's keys and
// positions, in and out (4 arrays of N int32, each rounded up to 256 bytes), and CUB's temporary
// storage.
size_t embedding_backward_scratch_bytes(int64_t N, int64_t V);
// tokens (N) ids, dout (N, C), dweight (V, C) += as embedding_backward, ids outside [0, V)
// skipped. scratch: embedding_backward_scratch_bytes(N, V) bytes of device memory, in use until
// the work queued on `stream` ends.
template <typename T>
void launch_embedding_backward(const int32_t* tokens, const T* dout, float* dweight, int64_t N,
                               int64_t V, int64_t C, void* scratch, size_t scratch_bytes,
                               cudaStream_t stream);

}  // namespace memento::ops::cuda
