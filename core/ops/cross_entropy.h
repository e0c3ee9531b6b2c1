// Fused softmax cross-entropy over the vocabulary.
#pragma once

#include "core/tensor.h"

namespace memento::ops {

struct CrossEntropyResult {
  double loss_sum = 0;  // sum over counted rows of -log softmax(logits)[target]
  int64_t count = 0;    // rows whose target is >= 0 (negative targets are ignored)
};

// logits (N, V), targets (N) i32 in [0, V) or negative to ignore. When dlogits (N, V) is given
// (non-null data or kMeta), writes dlogits = (softmax(logits) - onehot(target)) * grad_scale for
// counted rows and 0 for ignored ones; dlogits may alias logits. Rows run in parallel; each row's
// sum is computed in fp64 in a fixed order, so results are deterministic.
CrossEntropyResult cross_entropy(const TensorView& logits, const TensorView& targets,
                                 const TensorView& dlogits, double grad_scale);

}  // namespace memento::ops
