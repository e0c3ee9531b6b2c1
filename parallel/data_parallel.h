// Data-parallel gradient reduction. Buckets are ranges of the flat gradient buffer (contract 1),
// laid out from its end, where backward produces gradients first (lm_head, final norm, last
// layer), towards the embedding at its start. A bucket's all-reduce starts as soon as backward
// reports that every gradient in it is final, so communication overlaps the rest of backward.
#pragma once

#include <memory>
#include <vector>

#include "core/parameters.h"
#include "core/parallel/communicator.h"

namespace memento::parallel {

class GradientReducer {
 public:
  // flat_grads: the whole gradient buffer; bucket_elements: target bucket size.
  GradientReducer(const TensorView& flat_grads, Communicator& dp, int64_t bucket_elements);

  // Called by backward on the last micro-batch of a step: every gradient at offsets >= offset is
  // final. Starts the all-reduce (sum) of each bucket that lies wholly at or after it.
  void grads_final_from(int64_t offset);
  // Starts whatever has not started, waits for every bucket, and re-arms for the next step.
  void finish();

  const std::vector<FlatRange>& buckets() const { return buckets_; }

 private:
  TensorView grads_;
  Communicator& dp_;
  std::vector<FlatRange> buckets_;          // from the end of the buffer to its start
  std::vector<std::unique_ptr<Work>> work_;  // in flight, one per started bucket
  size_t started_ = 0;                       // buckets_[0, started_) have been started
};

// Rank r's share of n elements split into `parts` equal ranges (n is a multiple of parts).
FlatRange shard_of(int64_t n, int parts, int r);

}  // namespace memento::parallel
