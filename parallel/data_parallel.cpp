#include "parallel/data_parallel.h"

#include <algorithm>
#include <iterator>

#include "core/error.h"

namespace memento::parallel {

GradientReducer::GradientReducer(const TensorView& flat_grads, Communicator& dp,
                                 int64_t bucket_elements)
    : grads_(flat_grads), dp_(dp) {
  MEMENTO_CHECK(bucket_elements > 0, "bucket size must be positive");
  for (int64_t end = flat_grads.numel(); end > 0; end -= bucket_elements)
    buckets_.push_back({std::max<int64_t>(0, end - bucket_elements), end});
  final_.assign(buckets_.size(), 0);
}

void GradientReducer::grads_final(FlatRange range) {
  if (range.size() > 0) {
    // Counting elements alone would miss a repeat inside a bucket not yet full, and the extra
    // count could start that bucket before all of it is final: check against the ranges so far.
    const auto next = reported_.lower_bound(range.begin);
    const bool overlaps = (next != reported_.end() && next->first < range.end) ||
                          (next != reported_.begin() && std::prev(next)->second > range.begin);
    MEMENTO_CHECK(!overlaps, "gradient range [", range.begin, ", ", range.end,
                  ") reported final twice in one step");
    reported_.emplace(range.begin, range.end);
  }
  // Buckets run from the end of the buffer to its start: bucket i covers
  // [n - (i + 1) * size, n - i * size), clipped at 0.
  for (size_t i = 0; i < buckets_.size(); ++i) {
    const int64_t begin = std::max(range.begin, buckets_[i].begin);
    const int64_t end = std::min(range.end, buckets_[i].end);
    if (begin < end) final_[i] += end - begin;
  }
  start_ready();
}

void GradientReducer::start_ready() {
  while (started_ < buckets_.size() && final_[started_] == buckets_[started_].size()) {
    const FlatRange& b = buckets_[started_++];
    work_.push_back(dp_.all_reduce_async(grads_.flat_range(b.begin, Shape{b.size()})));
  }
}

void GradientReducer::finish() {
  // Whatever backward did not report (a stage without some parameters' backward) goes now.
  for (size_t i = 0; i < buckets_.size(); ++i) final_[i] = buckets_[i].size();
  start_ready();
  for (auto& w : work_) w->wait();
  work_.clear();
  started_ = 0;
  final_.assign(buckets_.size(), 0);
  reported_.clear();
}

FlatRange shard_of(int64_t n, int parts, int r) {
  MEMENTO_CHECK(parts > 0 && n % parts == 0, n, " elements do not split into ", parts, " shards");
  const int64_t size = n / parts;
  return {r * size, (r + 1) * size};
}

}  // namespace memento::parallel
