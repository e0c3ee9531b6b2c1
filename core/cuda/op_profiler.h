// Where a GPU step goes, op by op: with profiling on, every core/ops call that runs on a GPU is
// bracketed by two CUDA events on the compute stream, and op_profile_report() sums their elapsed
// times per op name. Off by default (one relaxed atomic load per op); the trainer turns it on
// with MEMENTO_PROFILE_OPS=1 and prints the table after a step. Only built with MEMENTO_WITH_CUDA.
#pragma once

#include <string>

namespace memento::cuda {

void set_op_profiling(bool on);
bool op_profiling();

// Records a start event in its constructor and an end event in its destructor (the op's kernels
// are queued in between); nothing when profiling is off.
class OpTimer {
 public:
  explicit OpTimer(const char* op);
  ~OpTimer();
  OpTimer(const OpTimer&) = delete;
  OpTimer& operator=(const OpTimer&) = delete;

 private:
  int slot_ = -1;
};

// Waits for the GPU, then returns a table (op, calls, total ms, share of `step_ms`) sorted by
// time, and forgets the recorded events.
std::string op_profile_report(double step_ms);

}  // namespace memento::cuda
