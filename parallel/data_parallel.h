// Data-parallel gradient reduction. Buckets are ranges of the flat gradient buffer (contract 1),
// laid out from its end, where backward produces gradients first (lm_head, final norm, last
// layer), towards the embedding at its start. Backward reports which parameters' gradients are
// final (flat ranges, in any order); a bucket's all-reduce starts once every element of it is
// final and every bucket before it has started (the same order on every rank), so communication
// overlaps the rest of backward.
#pragma once

#include <map>
#include <memory>
#include <vector>

#include "core/parallel/communicator.h"
#include "core/parameters.h"

namespace memento::parallel {

class GradientReducer {
 public:
  // flat_grads: the whole gradient buffer; bucket_elements: target bucket size.
  GradientReducer(const TensorView& flat_grads, Communicator& dp, int64_t bucket_elements);

  // Called by backward on the last micro-batch of a step: the gradients of `range` are final (a
  // range is reported once per step; a repeat or an overlap is fatal). Starts the all-reduce (sum)
  // of each bucket that became ready, in bucket order.
  void grads_final(FlatRange range);
  // Starts whatever has not started, waits for every bucket, and re-arms for the next step.
  void finish();

  const std::vector<FlatRange>& buckets() const { return buckets_; }

 private:
  TensorView grads_;
  Communicator& dp_;
  std::vector<FlatRange> buckets_;           // from the end of the buffer to its start
  std::vector<int64_t> final_;               // elements of each bucket reported final this step
  std::map<int64_t, int64_t> reported_;      // the step's reported ranges, begin -> end
  std::vector<std::unique_ptr<Work>> work_;  // in flight, one per started bucket
  size_t started_ = 0;                       // buckets_[0, started_) have been started
  void start_ready();
};

// Rank r's share of n elements split into `parts` equal ranges (n is a multiple of parts).
FlatRange shard_of(int64_t n, int parts, int r);

}  // namespace memento::parallel
