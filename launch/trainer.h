// The training loop: builds the model, optimizer and data from a Config, prints the memory plan,
// trains, evaluates, logs and checkpoints. launch/trainer.cpp's train_step() is one training
// step, top to bottom; launch/trainer_state.cpp publishes, saves and restores the run's state and
// writes its logs.
#pragma once

#include <chrono>
#include <cstdint>
#include <fstream>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "checkpoint/state_registry.h"
#include "checkpoint/state_staging.h"
#include "core/data/sampler.h"
#include "core/model/llama.h"
#include "launch/config.h"
#include "memory/activation_policy.h"
#include "memory/activation_store.h"
#include "memory/memory_plan.h"
#include "memory/resources.h"
#include "optim/lr_schedule.h"
#include "optim/optimizer.h"
#include "parallel/data_parallel.h"
#include "parallel/pipeline_schedule.h"
#include "parallel/process_groups.h"

namespace memento {

// A micro-batch: inputs and next-token targets, both (B, T) i32.
using Batch = parallel::MicroBatch;

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
  const optim::Optimizer& optimizer() const { return *optimizer_; }
  double evaluate();  // mean validation loss over train.eval_batches micro-batches
  const RecordingActivationStore& activation_store() const { return *store_; }

 private:
  // init()'s steps, in order.
  void install_memory_resources();
  void select_device();
  void write_run_files();
  void load_data();
  void build_model();
  void build_optimizer_and_reduction();
  void publish_state();
  void report_model();
  void resume_or_initialize(Resume resume);
  void finish_start_up();
  void init(Resume resume);

  // train_step()'s pieces.
  void begin_step_measurements();
  double reduce_gradients(double loss_sum);
  double checked_grad_norm(double loss_sum) const;
  void gather_zero1_shards();
  StepMetrics step_metrics(std::chrono::steady_clock::time_point start, double loss_sum, double lr,
                           double grad_norm);
  // What the ranks agreed to do at a step boundary (signals, SIGUSR1's save request).
  struct Requests {
    int stop_signal = 0;  // 0: none
    bool save = false;
  };
  Requests agree_on_requests();
  void snapshot_hook(const Requests& requests);
  StepMetrics train_step();

  // launch/trainer_state.cpp
  void resume_latest(Resume resume);
  void restore(const std::string& checkpoint_dir);
  void save();
  void open_metrics_file();
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
  void log(const StepMetrics& m);

  Batch next_micro_batch(int64_t micro, std::vector<int32_t>& windows);
  Batch load_batch(const std::vector<int32_t>& windows);
  // Gradients and ZeRO-1 gathers go over NCCL on a GPU, over the MPI dp group on the CPU.
  parallel::Communicator& grad_comm() { return groups_.device_dp(); }
  TrackingResource& tracked_memory() { return gpu_memory_ ? *gpu_memory_ : memory_; }

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
  Batch staging_;  // a GPU run's micro-batch on its way to the device (pinned)
  std::unique_ptr<LlamaModel> model_;
  std::unique_ptr<optim::Optimizer> optimizer_;
  std::unique_ptr<DataLoader> data_;
  std::unique_ptr<parallel::GradientReducer> reducer_;  // null when dp = 1
  std::unique_ptr<parallel::PipelineSchedule> schedule_;
  std::unique_ptr<RecordingActivationStore> store_;  // memory.activation_policy
  optim::LrSchedule lr_schedule_;
  // Host mirrors of the state a checkpoint reads (a GPU run's buffers; the CPU's are read in
  // place). Declared after the resources they come from, so that they are freed before them.
  std::unique_ptr<checkpoint::StateStaging> staging_state_;
  checkpoint::StateRegistry save_state_;  // this rank's slice of every tensor
  checkpoint::StateRegistry load_state_;  // everything this rank holds
  MemoryPlan plan_;
  int64_t step_ = 0;
  int64_t grad_accum_ = 1;
  int64_t profile_step_ = -1;  // the step whose GPU ops are timed (MEMENTO_PROFILE_OPS)
  double peak_flops_ = 0;
  int64_t seed_ = 0;
  int threads_ = 1;
  int local_ranks_ = 1;  // ranks on this node (a GPU run's share of host memory)
  std::string resolved_config_;
  std::string tokenizer_text_;
  std::ofstream metrics_file_;
  LogInterval interval_;  // the steps since the last metrics line
  bool stopped_ = false;
  bool warned_mfu_ = false;
  double run_seconds_ = 0;
  int64_t run_steps_ = 0;
  int64_t last_step_ = 0;  // where this run() stops
};

}  // namespace memento
