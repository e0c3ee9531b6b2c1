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
#include "parallel/data_parallel.h"
#include "parallel/process_groups.h"

namespace memento {

// A micro-batch: inputs and next-token targets, both (B, T) i32.
struct Batch {
  Tensor tokens;
  Tensor targets;
};

struct StepMetrics {
  int64_t step = 0;  // 1-based number of the update just taken
  double loss = 0;
  double lr = 0;
  double grad_norm = 0;
  double seconds = 0;
  double tokens = 0;  // trained on in this step, over all data-parallel ranks
  double tokens_per_second = 0;
  double mfu = 0;         // fraction of peak FLOP/s
  double gemm_share = 0;  // fraction of the step spent in GEMMs
  size_t memory_bytes = 0;
  size_t peak_bytes = 0;
  std::optional<double> val_loss;
};

// What the trainer does with the run's checkpoints at start (`--resume`, `--resume=auto-fallback`).
enum class Resume {
  kNo,              // start from step 0, whatever checkpoint.dir holds
  kLatest,          // the newest checkpoint that verifies; step 0 when there is none at all, an
                    // error when step directories exist and none of them verifies
  kLatestOrScratch  // the same, but step 0 (with a warning) when none verifies
};

class Trainer {
 public:
  // Builds everything for this rank of `groups` and resumes as `resume` says, resharding a
  // checkpoint saved with another data-parallel size (an error if it belongs to another model).
  // Every checkpoint passed over is logged with its reason. Throws ConfigError, DataError,
  // CheckpointError.
  Trainer(Config config, Resume resume, parallel::ProcessGroups& groups);
  // A single-process trainer (no MPI).
  Trainer(Config config, Resume resume);
  ~Trainer();

  // Trains until config.train.steps, or until `stop_at_step` updates have been taken (then
  // saves a checkpoint, as a preempted run does). Returns the metrics of every step it ran.
  // Serves signals at step boundaries (launch/signals.h); stopped() tells whether SIGTERM
  // ended the run early.
  std::vector<StepMetrics> run(int64_t stop_at_step = -1);
  bool stopped() const { return stopped_; }

  int64_t step() const { return step_; }
  const LlamaModel& model() const { return *model_; }
  const optim::AdamW& optimizer() const { return *optimizer_; }
  double evaluate();  // mean validation loss over train.eval_batches micro-batches
  const KeepActivationStore& activation_store() const { return store_; }

 private:
  void init(Resume resume);
  void resume_latest(Resume resume);
  void open_metrics_file();
  StepMetrics train_step();
  void register_state();
  Batch next_micro_batch(int64_t micro, std::vector<int32_t>& windows);
  void restore(const std::string& checkpoint_dir);
  void save();
  // The steps a metrics line reports on.
  struct LogInterval {
    int64_t steps = 0;
    double seconds = 0, tokens = 0, loss_sum = 0;
    void add(const StepMetrics& m) {
      ++steps;
      seconds += m.seconds;
      tokens += m.tokens;
      loss_sum += m.loss;
    }
  };
  void log(const StepMetrics& m, const LogInterval& interval);
  double measure_peak_flops() const;
  // Gradients and ZeRO-1 gathers go over NCCL on a GPU, over the MPI dp group on the CPU.
  parallel::Communicator& grad_comm() { return groups_.device_dp(); }
  TrackingResource& tracked_memory() { return gpu_memory_ ? *gpu_memory_ : memory_; }
  Batch load_batch(const std::vector<int32_t>& windows);
  void copy_state_to_host();
  void copy_state_from_host();

  Config config_;
  std::unique_ptr<parallel::ProcessGroups> owned_groups_;  // single-process runs only
  parallel::ProcessGroups& groups_;
  parallel::Communicator& dp_;                    // this rank's data-parallel group
  TrackingResource memory_;                       // every CPU allocation of the run goes through it
  Device device_ = Device::cpu();                 // where the model computes
  std::unique_ptr<TrackingResource> gpu_memory_;  // every GPU allocation, when on a GPU
  std::unique_ptr<ScopedDefaultResource> gpu_scope_;
  std::unique_ptr<ScopedDefaultResource> memory_scope_;
  std::unique_ptr<LimitResource> budget_;
  std::unique_ptr<ScopedDefaultResource> budget_scope_;
  // Page-locked host memory for the batches and checkpoint mirrors of a GPU run.
  std::unique_ptr<TrackingResource> pinned_memory_;
  // Host copies of the GPU's values and optimizer states for checkpoints (undefined on the CPU,
  // where the checkpoint reads the buffers themselves). Declared after the resources they come
  // from, so that they are freed before them.
  Tensor host_values_, host_exp_avg_, host_exp_avg_sq_;
  Batch staging_;  // a GPU run's micro-batch on its way to the device (pinned)
  std::unique_ptr<LlamaModel> model_;
  std::unique_ptr<optim::AdamW> optimizer_;
  std::unique_ptr<DataLoader> data_;
  std::unique_ptr<parallel::GradientReducer> reducer_;  // null when dp = 1
  KeepActivationStore store_;
  optim::LrSchedule schedule_;
  checkpoint::StateRegistry save_state_;  // this rank's slice of every tensor
  checkpoint::StateRegistry load_state_;  // everything this rank holds
  MemoryPlan plan_;
  int64_t step_ = 0;
  int64_t grad_accum_ = 1;
  int64_t profile_step_ = -1;  // the step whose GPU ops are timed (MEMENTO_PROFILE_OPS)
  double peak_flops_ = 0;
  int64_t data_epoch_ = 0, data_index_ = 0;  // mirrors of the data cursor for the registry
  int64_t seed_ = 0;
  int local_ranks_ = 1;  // ranks on this node (a GPU run's share of host memory)
  std::string resolved_config_;
  std::string tokenizer_text_;
  std::ofstream metrics_file_;
  bool stopped_ = false;
  bool warned_mfu_ = false;
  double run_seconds_ = 0;
  int64_t run_steps_ = 0;
};

}  // namespace memento
