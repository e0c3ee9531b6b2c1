// The `keep` policy of the activation store, with a record of every save and take so that a dry
// run lists each saved activation with its size and lifetime before the first step.
#pragma once

#include <cstdint>
#include <string>
#include <unordered_map>
#include <vector>

#include "core/activation_store.h"

namespace memento {

// One saved activation as seen by the store: saved at event `saved_at`, taken at `taken_at`
// (events count saves and takes in order; -1 while still live).
struct ActivationRecord {
  std::string key;
  Shape shape;
  DType dtype;
  size_t bytes;       // 0 when the tensor shares storage with one already live (counted once)
  int64_t saved_at;
  int64_t taken_at;
};

// Keeps every saved tensor where it is (device memory on the GPU, host memory on the CPU).
class KeepActivationStore final : public ActivationStore {
 public:
  void save(const std::string& key, Tensor t) override;
  Tensor take(const std::string& key) override;
  size_t live_bytes() const override { return live_bytes_; }

  size_t peak_bytes() const { return peak_bytes_; }
  bool empty() const { return live_.empty(); }
  const std::vector<ActivationRecord>& records() const { return records_; }
  void clear_records();  // between steps, when nothing is live: resets records and peak

 private:
  struct Live {
    Tensor tensor;
    size_t record;
  };
  std::unordered_map<std::string, Live> live_;
  std::unordered_map<const void*, int> storage_refs_;  // live entries per storage
  std::vector<ActivationRecord> records_;
  int64_t event_ = 0;
  size_t live_bytes_ = 0;
  size_t peak_bytes_ = 0;
};

}  // namespace memento
