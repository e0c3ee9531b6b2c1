#include "launch/run_plan.h"

#include <cstdio>

#include "core/error.h"
#include "memory/resources.h"
#include "optim/optimizer.h"

namespace memento {

RunPlan plan_run(const Config& config, const std::string& device) {
  const TrainConfig& t = config.train;
  const int64_t dp = config.parallel.dp;
  const bool zero1 = config.parallel.zero1 && dp > 1;
  RunPlan run;
  run.memory =
      plan_memory(config.model, t.micro_batch, t.seq_len,
                  optim::state_bytes_per_param(config.optim.name, config.model.master_dtype()),
                  config.memory.activation_policy);
  if (zero1) {
    // Each rank holds the states of 1/dp of the buffer, padded to equal shards.
    const size_t per_param =
        optim::state_bytes_per_param(config.optim.name, config.model.master_dtype());
    const size_t params = run.memory.optimizer_states / per_param;
    run.memory.optimizer_states =
        (params + static_cast<size_t>(dp) - 1) / static_cast<size_t>(dp) * per_param;
  }
  const bool mixed = config.model.dtype == DType::kBF16;
  run.title = detail::concat(
      "memory plan (per rank, ", dtype_name(config.model.dtype), mixed ? " mixed precision" : "",
      " on ", device, ", micro-batch ", t.micro_batch, " x ", t.seq_len,
      dp > 1 ? detail::concat(", ", dp, " data-parallel ranks") : std::string(),
      zero1 ? detail::concat(", optimizer states sharded over ", dp, " ranks (ZeRO-1)")
            : std::string(),
      ")");
  return run;
}

std::string format_run_plan(const RunPlan& plan) {
  return format_memory_table(plan.memory, plan.title) +
         detail::concat(format_count(plan.memory.parameter_count), " parameters\n");
}

void check_memory_budget(const Config& config, const MemoryPlan& plan) {
  const int64_t budget = config.memory.budget_bytes;
  if (budget <= 0 || plan.total() <= static_cast<size_t>(budget)) return;
  const struct {
    const char* what;
    size_t bytes;
  } parts[] = {{"parameters", plan.parameters},
               {"gradients", plan.gradients},
               {"optimizer states", plan.optimizer_states},
               {"the step's activations and transients", plan.step_peak}};
  const auto* largest = &parts[0];
  for (const auto& p : parts) largest = p.bytes > largest->bytes ? &p : largest;
  throw ConfigError(detail::concat(
      "memory.budget_bytes = ", budget, " (", format_bytes(static_cast<double>(budget)),
      ") is below this run's estimated peak of ", format_bytes(static_cast<double>(plan.total())),
      ", of which ", largest->what, " take ", format_bytes(static_cast<double>(largest->bytes)),
      " (see the memory plan; raise the budget or lower train.micro_batch / train.seq_len)"));
}

std::string format_count(int64_t n) {
  char text[32];
  const double x = static_cast<double>(n);
  if (n >= 1'000'000'000) {
    std::snprintf(text, sizeof(text), "%.2fB", x / 1e9);
  } else if (n >= 1'000'000) {
    std::snprintf(text, sizeof(text), "%.2fM", x / 1e6);
  } else if (n >= 10'000) {
    std::snprintf(text, sizeof(text), "%.1fK", x / 1e3);
  } else {
    std::snprintf(text, sizeof(text), "%lld", static_cast<long long>(n));
  }
  return text;
}

}  // namespace memento
