// The training loop: builds the model, optimizer and data from a Config, prints the memory plan,
// trains, evaluates, logs and checkpoints. launch/trainer.cpp's step() is one training step,
// top to bottom.
#pragma once

#include <cstdint>
#include <fstream>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "checkpoint/state_registry.h"
#include "core/data/sampler.h"
#include "core/model/llama.h"
#include "launch/config.h"
#include "memory/activation_store.h"
#include "memory/memory_plan.h"
#include "memory/resources.h"
#include "optim/adamw.h"
#include "optim/lr_schedule.h"

namespace memento {

struct StepMetrics {
  int64_t step = 0;  // 1-based number of the update just taken
  double loss = 0;
  double lr = 0;
  double grad_norm = 0;
  double seconds = 0;
  double tokens_per_second = 0;
  double mfu = 0;  // fraction of peak FLOP/s
  double gemm_share = 0;  // fraction of the step spent in GEMMs
  size_t memory_bytes = 0;
  size_t peak_bytes = 0;
  std::optional<double> val_loss;
};

class Trainer {
 public:
  // Builds everything; with resume, restores the latest complete checkpoint of the run (an
  // error if it belongs to another model). Throws ConfigError, DataError, CheckpointError.
  Trainer(Config config, bool resume);
  ~Trainer();

  // Trains until config.train.steps, or until `stop_at_step` updates have been taken (then
  // saves a checkpoint, as a preempted run does). Returns the metrics of every step it ran.
  std::vector<StepMetrics> run(int64_t stop_at_step = -1);

  int64_t step() const { return step_; }
  const LlamaModel& model() const { return *model_; }
  const optim::AdamW& optimizer() const { return *optimizer_; }
  double evaluate();  // mean validation loss over train.eval_batches micro-batches

 private:
  StepMetrics train_step();
  void register_state();
  void restore(const std::string& checkpoint_dir);
  void save();
  void log(const StepMetrics& m);
  double measure_peak_flops() const;

  Config config_;
  TrackingResource memory_;  // every CPU allocation of the run goes through it
  std::unique_ptr<ScopedDefaultResource> memory_scope_;
  std::unique_ptr<LimitResource> budget_;
  std::unique_ptr<ScopedDefaultResource> budget_scope_;
  std::unique_ptr<LlamaModel> model_;
  std::unique_ptr<optim::AdamW> optimizer_;
  std::unique_ptr<DataLoader> data_;
  KeepActivationStore store_;
  optim::LrSchedule schedule_;
  checkpoint::StateRegistry state_;
  MemoryPlan plan_;
  int64_t step_ = 0;
  int64_t grad_accum_ = 1;
  double peak_flops_ = 0;
  int64_t data_epoch_ = 0, data_index_ = 0;  // mirrors of the data cursor for the registry
  int64_t seed_ = 0;
  std::string resolved_config_;
  std::string tokenizer_text_;
  std::ofstream metrics_file_;
  double run_seconds_ = 0;
  int64_t run_steps_ = 0;
};

}  // namespace memento
