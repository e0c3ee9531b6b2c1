#include "memory/activation_store.h"

#include <algorithm>
#include <functional>

#include "core/error.h"

namespace memento {

size_t RecordingActivationStore::LiveKeyHash::operator()(const LiveKey& k) const {
  const size_t h = std::hash<std::string>{}(k.key);
  return h ^ (std::hash<int64_t>{}(k.micro_batch) + 0x9e3779b97f4a7c15ULL + (h << 6) + (h >> 2));
}

void RecordingActivationStore::save(const std::string& key, Tensor t) {
  MEMENTO_CHECK(t.defined(), "saving an undefined tensor under ", key);
  const OpenLayer* open = innermost();
  // A save in backward would outlive the step's last take (nothing in the backward takes it
  // before the next micro-batch's forward), and a planner could not place it.
  MEMENTO_CHECK(open == nullptr || open->phase == Phase::kForward, "activation ", key,
                " saved in the backward of layer ", open->layer, " (micro-batch ", micro_batch_,
                "); saves happen in forward only");
  LiveKey live_key{micro_batch_, key};
  MEMENTO_CHECK(!live_.contains(live_key), "activation saved twice without take: ", key,
                " (micro-batch ", micro_batch_, ")");
  StorageUse& use = storage_[t.storage_id()];
  const size_t bytes = use.entries++ == 0 ? t.bytes() : 0;
  if (bytes != 0) use.bytes = bytes;
  live_bytes_ += bytes;
  peak_bytes_ = std::max(peak_bytes_, live_bytes_);
  ActivationRecord& record = records_.emplace_back();
  record.key = key;
  record.shape = t.shape();
  record.dtype = t.dtype();
  record.bytes = bytes;
  record.saved_at = event_++;
  record.taken_at = -1;
  record.micro_batch = micro_batch_;
  if (open != nullptr) {
    record.layer = open->layer;
    record.saved_phase = open->phase;
  }
  live_.emplace(std::move(live_key), Live{std::move(t), records_.size() - 1});
}

Tensor RecordingActivationStore::take(const std::string& key) {
  auto it = live_.find(LiveKey{micro_batch_, key});
  MEMENTO_CHECK(it != live_.end(), "activation never saved (or taken twice): ", key,
                " (micro-batch ", micro_batch_, ")");
  Live entry = std::move(it->second);
  live_.erase(it);
  ActivationRecord& record = records_[entry.record];
  record.taken_at = event_++;
  if (const OpenLayer* open = innermost()) {
    record.taken_layer = open->layer;
    record.taken_phase = open->phase;
  }
  auto use = storage_.find(entry.tensor.storage_id());
  if (--use->second.entries == 0) {
    // The storage is freed when its last entry goes, whichever entry paid for it.
    live_bytes_ -= use->second.bytes;
    storage_.erase(use);
  }
  return std::move(entry.tensor);
}

void RecordingActivationStore::begin_step() {
  MEMENTO_CHECK(!in_step_, "begin_step() twice without end_step()");
  MEMENTO_CHECK(open_.empty(), "begin_step() inside layer ", open_.back().layer);
  MEMENTO_CHECK(live_.empty(), "begin_step() with ", live_.size(), " live activations");
  in_step_ = true;
  reset_current();
}

void RecordingActivationStore::end_step() {
  MEMENTO_CHECK(in_step_, "end_step() without begin_step()");
  MEMENTO_CHECK(open_.empty(), "end_step() inside layer ", open_.back().layer);
  // Every activation of a step is taken by its backward; one left over would leak each step.
  MEMENTO_CHECK(live_.empty(), "end_step() with ", live_.size(), " live activations (one is ",
                live_.begin()->first.key, " of micro-batch ", live_.begin()->first.micro_batch,
                ")");
  in_step_ = false;
  last_step_.step = steps_ended_++;
  last_step_.peak_bytes = peak_bytes_;
  // Swapping keeps both vectors' capacity: memory stays that of the largest step.
  last_step_.records.swap(records_);
  reset_current();
}

void RecordingActivationStore::set_micro_batch(int64_t micro_batch) {
  MEMENTO_CHECK(open_.empty(), "set_micro_batch(", micro_batch, ") inside layer ",
                open_.back().layer);
  MEMENTO_CHECK(micro_batch >= 0, "negative micro-batch ", micro_batch);
  micro_batch_ = micro_batch;
}

void RecordingActivationStore::begin_layer(const std::string& layer, Phase phase) {
  open_.push_back({layer, phase});
}

void RecordingActivationStore::end_layer(const std::string& layer, Phase phase) {
  MEMENTO_CHECK(!open_.empty(), "end_layer(", layer, ", ", phase_name(phase),
                ") without begin_layer");
  const OpenLayer& open = open_.back();
  MEMENTO_CHECK(open.layer == layer && open.phase == phase, "end_layer(", layer, ", ",
                phase_name(phase), ") while the innermost open layer is ", open.layer, " (",
                phase_name(open.phase), ")");
  open_.pop_back();
}

void RecordingActivationStore::clear_records() {
  MEMENTO_CHECK(live_.empty(), "clear_records() with ", live_.size(), " live activations");
  reset_current();
}

void RecordingActivationStore::reset_current() {
  records_.clear();
  event_ = 0;
  peak_bytes_ = live_bytes_;
}

}  // namespace memento
