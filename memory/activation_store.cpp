#include "memory/activation_store.h"

#include <algorithm>

namespace memento {

void KeepActivationStore::save(const std::string& key, Tensor t) {
  MEMENTO_CHECK(t.defined(), "saving an undefined tensor under ", key);
  MEMENTO_CHECK(!live_.contains(key), "activation saved twice without take: ", key);
  const bool first_of_storage = storage_refs_[t.storage_id()]++ == 0;
  const size_t bytes = first_of_storage ? t.bytes() : 0;
  live_bytes_ += bytes;
  peak_bytes_ = std::max(peak_bytes_, live_bytes_);
  records_.push_back({key, t.shape(), t.dtype(), bytes, event_++, -1});
  live_.emplace(key, Live{std::move(t), records_.size() - 1});
}

Tensor KeepActivationStore::take(const std::string& key) {
  auto it = live_.find(key);
  MEMENTO_CHECK(it != live_.end(), "activation never saved (or taken twice): ", key);
  Live entry = std::move(it->second);
  live_.erase(it);
  ActivationRecord& record = records_[entry.record];
  record.taken_at = event_++;
  if (--storage_refs_[entry.tensor.storage_id()] == 0) {
    storage_refs_.erase(entry.tensor.storage_id());
    // The storage is freed when its last entry goes, whichever entry paid for it.
    live_bytes_ -= entry.tensor.bytes();
  }
  return std::move(entry.tensor);
}

void KeepActivationStore::clear_records() {
  MEMENTO_CHECK(live_.empty(), "clear_records() with ", live_.size(), " live activations");
  records_.clear();
  event_ = 0;
  peak_bytes_ = 0;
}

}  // namespace memento
