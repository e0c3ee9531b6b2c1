// The memory estimator: what one rank of a training run holds, measured by executing one
// micro-batch forward and backward of the model on the kMeta device (shapes, no bytes) under a
// tracking resource. Nothing is allocated, so it works for a 7B model on a laptop.
#pragma once

#include <cstddef>
#include <string>
#include <vector>

#include "core/model/model_config.h"
#include "memory/activation_store.h"

namespace memento {

struct MemoryPlan {
  int64_t parameter_count = 0;   // without alignment padding
  size_t parameters = 0;         // flat value buffer
  size_t gradients = 0;          // flat gradient buffer
  size_t optimizer_states = 0;   // e.g. AdamW's exp_avg and exp_avg_sq
  size_t activations_saved = 0;  // peak bytes held by the activation store in one micro-batch
  size_t step_peak = 0;          // peak of everything allocated during forward+backward
                                 // (saved activations, transients, logits), beyond the buffers
  std::vector<ActivationRecord> activations;  // every saved tensor with its lifetime
  std::string activation_policy;              // memory.activation_policy

  size_t total() const { return parameters + gradients + optimizer_states + step_peak; }
};

// optimizer_bytes_per_param: bytes of optimizer state per parameter (8 for fp32 AdamW).
// The activations are those the store of `activation_policy` (memory/activation_policy.h) holds.
MemoryPlan plan_memory(const ModelConfig& model, int64_t micro_batch, int64_t seq_len,
                       size_t optimizer_bytes_per_param,
                       const std::string& activation_policy = "keep");

// The start-up memory table, one line per component.
std::string format_memory_table(const MemoryPlan& plan, const std::string& title);
// Every saved activation: key, shape, dtype, bytes, and the [save, take) event interval.
std::string format_activation_list(const std::vector<ActivationRecord>& records);

}  // namespace memento
