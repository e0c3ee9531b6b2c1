// The memory plan of a run as its config describes it: one rank's share of the parameters,
// gradients, optimizer states (sharded under ZeRO-1) and the step's peak. The trainer's start-up
// table and `trainer --dry-run` print the same plan, from this one function.
#pragma once

#include <string>

#include "launch/config.h"
#include "memory/memory_plan.h"

namespace memento {

struct RunPlan {
  MemoryPlan memory;
  std::string title;  // what the table is of: rank, dtype, device, micro-batch, sharding
};

// The plan of one rank of `config`'s layout (parallel.dp, parallel.zero1, model.dtype and device,
// train.micro_batch x train.seq_len); `device` names where it computes ("cpu", "NVIDIA H100
// (cuda:0)"). Nothing is allocated (the model runs on shape-only tensors).
RunPlan plan_run(const Config& config, const std::string& device);

// The plan's table, then one line with the parameter count ("2.36M parameters").
std::string format_run_plan(const RunPlan& plan);

// With memory.budget_bytes set, throws ConfigError naming the key, the budget and the plan's
// estimated peak with its largest part when the estimate does not fit.
void check_memory_budget(const Config& config, const MemoryPlan& plan);

// 2364416 -> "2.36M", 6738415616 -> "6.74B", 950 -> "950".
std::string format_count(int64_t n);

}  // namespace memento
