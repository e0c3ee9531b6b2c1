// Fused softmax cross-entropy on CUDA tensors: the GPU twin of core/ops/cross_entropy.h. Logits
// bf16 or fp32; the softmax statistics, the per-row losses and all arithmetic are fp32, and the
// loss sum is reduced in fp64 in a fixed order (deterministic). fp32 logits are never
// materialised for a bf16 vocabulary: each row is read once for its statistics and once more for
// the gradient.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "core/ops/cross_entropy.h"
#include "core/tensor.h"

namespace memento::ops::cuda {

// logits (N, V) bf16|f32, targets (N) i32 in [0, V) or negative to ignore. When dlogits (N, V),
// same dtype as logits, has data, writes dlogits = (softmax(logits) - onehot(target)) * grad_scale
// for counted rows and 0 for ignored ones; dlogits may be logits itself (in place) or disjoint
// from it. A default TensorView means no gradient. Waits for the stream (one copy of the result to
// the host). A target >= V throws DataError naming the first such row; dlogits is then unspecified.
CrossEntropyResult cross_entropy(const TensorView& logits, const TensorView& targets,
                                 const TensorView& dlogits, double grad_scale,
                                 cudaStream_t stream = nullptr);

// What the device computes; copied to the host in one piece.
struct CrossEntropyTotals {
  double loss_sum;     // sum over rows of the fp32 row losses, in fp64 and a fixed order
  int64_t count;       // rows with target >= 0
  int64_t bad_row;     // first row with target >= V, or N when none
  int64_t bad_target;  // targets[bad_row] when bad_row < N
};

// Launcher on raw device pointers (T = float or __nv_bfloat16); dlogits may be null (no
// gradient) or equal to logits. row_loss: scratch of N floats. Writes *totals. Checks the
// launches; does not wait.
template <typename T>
void launch_cross_entropy(const T* logits, const int32_t* targets, T* dlogits, float grad_scale,
                          float* row_loss, CrossEntropyTotals* totals, int64_t N, int64_t V,
                          cudaStream_t stream);

}  // namespace memento::ops::cuda
