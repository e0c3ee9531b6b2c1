// The books every activation-store policy keeps, and the `keep` policy. The books record each save
// and take of the current step with its micro-batch, layer and phase, so that a dry run lists
// each saved activation with its size and lifetime before the first step, and a planner (MEMO)
// sees the liveness it places. They hold one step: end_step() moves the step's records aside
// (readable until the next end_step) and starts empty, whatever the number of steps.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "core/activation_store.h"

namespace memento {

// One saved activation as seen by the store: saved at event `saved_at`, taken at `taken_at`
// (events count the step's saves and takes in order; -1 while still live).
struct ActivationRecord {
  std::string key;
  Shape shape;
  DType dtype = DType::kF32;
  size_t bytes = 0;  // 0 when the tensor shares storage with one already live (counted once)
  int64_t saved_at = -1;
  int64_t taken_at = -1;
  int64_t micro_batch = 0;
  std::string layer;                 // innermost layer open at the save; empty outside the hooks
  std::optional<Phase> saved_phase;  // that layer's phase (nullopt outside the hooks)
  std::string taken_layer;           // innermost layer open at the take
  std::optional<Phase> taken_phase;
};

// What one complete step saved: every record, in save order, and the peak of live bytes.
struct ActivationStepLog {
  int64_t step = -1;  // steps ended before this one (0 for the first); -1 before any
  std::vector<ActivationRecord> records;
  size_t peak_bytes = 0;
};

// Keys entries by (micro-batch, key), checks the schedule's hooks and keeps the records. It holds
// each tensor as given (the keep policy); a policy that moves bytes (swap, recompute) derives
// from it, calls the base in each hook it overrides, and acts on the entries of the layer that
// just ended its forward or is about to begin its backward.
class RecordingActivationStore : public ActivationStore {
 public:
  // Fatal: an undefined tensor; (micro-batch, key) already live; a save while the innermost open
  // layer runs its backward (saves happen in forward only).
  void save(const std::string& key, Tensor t) override;
  // Fatal: (current micro-batch, key) not live.
  Tensor take(const std::string& key) override;
  size_t live_bytes() const override { return live_bytes_; }

  // Fatal while a step is open, anything is live or a layer is open. Starts empty records.
  void begin_step() override;
  // Fatal outside a step, or while anything is live or a layer is open. The step's records
  // become last_step(); the current records start empty.
  void end_step() override;
  void set_micro_batch(int64_t micro_batch) override;  // fatal while a layer is open
  void begin_layer(const std::string& layer, Phase phase) override;
  // Fatal unless (layer, phase) is the innermost open layer.
  void end_layer(const std::string& layer, Phase phase) override;

  virtual std::string_view policy() const = 0;  // its name in memory.activation_policy

  // The current step's records (or, without step hooks, since construction or clear_records).
  const std::vector<ActivationRecord>& records() const { return records_; }
  // The peak of live bytes over the current records' span.
  size_t peak_bytes() const { return peak_bytes_; }
  // The last complete step's records and peak, readable until the next end_step().
  const ActivationStepLog& last_step() const { return last_step_; }
  bool empty() const { return live_.empty(); }
  bool in_step() const { return in_step_; }
  int64_t micro_batch() const { return micro_batch_; }
  void clear_records();  // when nothing is live: resets the current records and peak

 private:
  struct LiveKey {
    int64_t micro_batch;
    std::string key;
    bool operator==(const LiveKey&) const = default;
  };
  struct LiveKeyHash {
    size_t operator()(const LiveKey& k) const;
  };
  struct Live {
    Tensor tensor;
    size_t record;
  };
  struct StorageUse {
    int entries;   // live entries that alias this storage
    size_t bytes;  // what the first of them paid
  };
  struct OpenLayer {
    std::string layer;
    Phase phase;
  };
  const OpenLayer* innermost() const { return open_.empty() ? nullptr : &open_.back(); }
  void reset_current();

  std::unordered_map<LiveKey, Live, LiveKeyHash> live_;
  std::unordered_map<const void*, StorageUse> storage_;
  std::vector<ActivationRecord> records_;
  ActivationStepLog last_step_;
  std::vector<OpenLayer> open_;  // begin_layer without its end_layer, outermost first
  int64_t micro_batch_ = 0;
  int64_t event_ = 0;
  int64_t steps_ended_ = 0;
  bool in_step_ = false;
  size_t live_bytes_ = 0;
  size_t peak_bytes_ = 0;
};

// Keeps every saved tensor where it is (device memory on the GPU, host memory on the CPU).
class KeepActivationStore final : public RecordingActivationStore {
 public:
  std::string_view policy() const override { return "keep"; }
};

}  // namespace memento
