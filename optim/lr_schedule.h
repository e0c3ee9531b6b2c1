// Learning rate as a function of the step: linear warmup, then cosine (or linear) decay to
// min_lr at the last step, or constant.
#pragma once

#include <cstdint>
#include <string>

namespace memento::optim {

enum class ScheduleKind : uint8_t { kCosine, kLinear, kConstant };
ScheduleKind schedule_from_name(const std::string& name);  // throws ConfigError

struct LrSchedule {
  ScheduleKind kind = ScheduleKind::kCosine;
  double lr = 3e-4;
  double min_lr = 3e-5;
  int64_t warmup_steps = 0;
  int64_t total_steps = 1;

  // The rate for update number `step` (0-based): warmup ramps (step+1)/warmup * lr.
  double at(int64_t step) const;
};

}  // namespace memento::optim
