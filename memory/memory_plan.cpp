#include "memory/memory_plan.h"

#include <cstdio>
#include <sstream>

#include "core/model/llama.h"
#include "memory/activation_policy.h"
#include "memory/resources.h"

namespace memento {

MemoryPlan plan_memory(const ModelConfig& model_config, int64_t micro_batch, int64_t seq_len,
                       size_t optimizer_bytes_per_param, const std::string& activation_policy) {
  TrackingResource tracking(default_resource(Device::meta()));
  ScopedDefaultResource scope(&tracking);

  LlamaModel model(model_config);
  model.params().allocate(model_config.master_dtype(), Device::meta(), nullptr,
                          model_config.compute_dtype());
  MemoryPlan plan;
  plan.parameter_count = model.params().numel();
  // Master values plus, with mixed precision, their compute-precision copy.
  plan.parameters = model.params().flat_values().bytes() +
                    (model.params().has_compute_copy() ? model.params().flat_compute().bytes() : 0);
  plan.gradients = model.params().flat_grads().bytes();
  plan.optimizer_states =
      static_cast<size_t>(model.params().padded_numel()) * optimizer_bytes_per_param;

  const size_t buffers = tracking.current_bytes();
  const Tensor tokens = Tensor::empty(Shape{micro_batch, seq_len}, DType::kI32, Device::meta());
  const Tensor targets = Tensor::empty(Shape{micro_batch, seq_len}, DType::kI32, Device::meta());
  tracking.reset_peak();
  const std::unique_ptr<RecordingActivationStore> store = make_activation_store(activation_policy);
  store->begin_step();
  model.forward_backward(*store, tokens, targets, 1.0);
  store->end_step();
  plan.step_peak = tracking.peak_bytes() - buffers;
  plan.activations_saved = store->last_step().peak_bytes;
  plan.activations = store->last_step().records;
  plan.activation_policy = std::string(store->policy());
  return plan;
}

std::string format_memory_table(const MemoryPlan& plan, const std::string& title) {
  std::ostringstream os;
  char line[160];
  auto row = [&](const char* what, size_t bytes, const std::string& note) {
    std::snprintf(line, sizeof(line), "  %-34s %12s  %s\n", what, format_bytes(bytes).c_str(),
                  note.c_str());
    os << line;
  };
  os << title << "\n";
  row("parameters", plan.parameters, std::to_string(plan.parameter_count) + " params");
  row("gradients", plan.gradients, "");
  row("optimizer states", plan.optimizer_states, "");
  row("activations saved for backward", plan.activations_saved,
      std::to_string(plan.activations.size()) + " tensors per micro-batch, policy " +
          plan.activation_policy);
  row("step peak (saved + transient)", plan.step_peak, "logits, workspaces, gradients in flight");
  row("total (estimated peak)", plan.total(), "");
  return os.str();
}

std::string format_activation_list(const std::vector<ActivationRecord>& records) {
  std::ostringstream os;
  char line[256];
  std::snprintf(line, sizeof(line), "  %-48s %-22s %-5s %12s  %s\n", "saved activation", "shape",
                "dtype", "bytes", "lifetime [save, take)");
  os << line;
  for (const ActivationRecord& r : records) {
    std::snprintf(line, sizeof(line), "  %-48s %-22s %-5s %12s  [%lld, %lld)\n", r.key.c_str(),
                  r.shape.str().c_str(), std::string(dtype_name(r.dtype)).c_str(),
                  r.bytes ? format_bytes(static_cast<double>(r.bytes)).c_str() : "(shared)",
                  static_cast<long long>(r.saved_at), static_cast<long long>(r.taken_at));
    os << line;
  }
  return os.str();
}

}  // namespace memento
