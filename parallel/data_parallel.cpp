#include "parallel/data_parallel.h"

#include <algorithm>

#include "core/error.h"

namespace memento::parallel {

GradientReducer::GradientReducer(const TensorView& flat_grads, Communicator& dp,
                                 int64_t bucket_elements)
    : grads_(flat_grads), dp_(dp) {
  MEMENTO_CHECK(bucket_elements > 0, "bucket size must be positive");
  for (int64_t end = flat_grads.numel(); end > 0; end -= bucket_elements)
    buckets_.push_back({std::max<int64_t>(0, end - bucket_elements), end});
}

void GradientReducer::grads_final_from(int64_t offset) {
  while (started_ < buckets_.size() && buckets_[started_].begin >= offset) {
    const FlatRange& b = buckets_[started_++];
    work_.push_back(dp_.all_reduce_async(grads_.flat_range(b.begin, Shape{b.size()})));
  }
}

void GradientReducer::finish() {
  grads_final_from(0);
  for (auto& w : work_) w->wait();
  work_.clear();
  started_ = 0;
}

FlatRange shard_of(int64_t n, int parts, int r) {
  MEMENTO_CHECK(parts > 0 && n % parts == 0, n, " elements do not split into ", parts, " shards");
  const int64_t size = n / parts;
  return {r * size, (r + 1) * size};
}

}  // namespace memento::parallel
