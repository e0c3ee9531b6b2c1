#include "launch/trainer.h"

#include <cmath>
#include <cstdlib>
#include <filesystem>

#include "core/data/tokenizer.h"
#include "core/device.h"
#include "core/host_memory.h"
#include "core/log.h"
#include "core/ops/matmul.h"
#include "core/parallel/self_communicator.h"
#include "core/threads.h"
#include "launch/bootstrap.h"
#include "launch/clock.h"
#include "launch/hf_weights.h"
#include "launch/run_plan.h"
#include "launch/signals.h"
#include "optim/grad_clip.h"

namespace memento {
namespace {

namespace fs = std::filesystem;

Batch host_batch(int64_t B, int64_t T, MemoryResource* memory = nullptr) {
  return {Tensor::empty(Shape{B, T}, DType::kI32, Device::cpu(), memory),
          Tensor::empty(Shape{B, T}, DType::kI32, Device::cpu(), memory)};
}

// B windows of T + 1 tokens split into inputs and next-token targets: b's (B, T) host tensors.
void split_windows(const std::vector<int32_t>& windows, const Batch& b) {
  const int64_t B = b.tokens.size(0), T = b.tokens.size(1);
  for (int64_t i = 0; i < B; ++i) {
    const int32_t* w = windows.data() + i * (T + 1);
    std::copy(w, w + T, b.tokens.data<int32_t>() + i * T);
    std::copy(w + 1, w + T + 1, b.targets.data<int32_t>() + i * T);
  }
}

}  // namespace

Trainer::Trainer(Config config, Resume resume)
    : config_(std::move(config)),
      owned_groups_(std::make_unique<parallel::ProcessGroups>(
          std::make_unique<parallel::SelfCommunicator>("world"), parallel::ParallelDims{})),
      groups_(*owned_groups_),
      dp_(groups_.dp()),
      memory_(default_resource(Device::cpu())) {
  init(resume);
}

Trainer::Trainer(Config config, Resume resume, parallel::ProcessGroups& groups)
    : config_(std::move(config)),
      groups_(groups),
      dp_(groups.dp()),
      memory_(default_resource(Device::cpu())) {
  init(resume);
}

Trainer::~Trainer() = default;

void Trainer::init(Resume resume) {
  install_memory_resources();  // every allocation of the run is counted, and capped by budget
  select_device();
  write_run_files();  // the resolved config, the memory plan, the saved-activation list
  load_data();        // a bad dataset fails before gigabytes are allocated
  build_model();
  build_optimizer_and_reduction();
  publish_state();  // what checkpoints save and restore (launch/trainer_state.cpp)
  report_model();
  resume_or_initialize(resume);
  finish_start_up();
}

void Trainer::install_memory_resources() {
  memory_scope_ = std::make_unique<ScopedDefaultResource>(&memory_);
  if (config_.memory.budget_bytes > 0) {
    budget_ = std::make_unique<LimitResource>(
        &memory_, static_cast<size_t>(config_.memory.budget_bytes), "memory.budget_bytes");
    budget_scope_ = std::make_unique<ScopedDefaultResource>(budget_.get());
  }
  threads_ = set_num_threads(static_cast<int>(config_.train.threads));
}

void Trainer::select_device() {
  if (!config_.model.on_cuda()) return;
  // MEMENTO_PROFILE_OPS: unset or 0 off, 1 step 3 (after the warm-up), N > 1 step N.
  if (const char* p = std::getenv("MEMENTO_PROFILE_OPS"); p != nullptr && std::atoll(p) > 0)
    profile_step_ = std::atoll(p) > 1 ? std::atoll(p) : 3;
  const LaunchInfo launch = read_launch_env();
  local_ranks_ = std::max(1, launch.local_world);
  device_ = select_cuda_device(launch.local_rank, launch.local_world, "model.device");
  gpu_memory_ = std::make_unique<TrackingResource>(cuda_device_memory(device_));
  gpu_scope_ = std::make_unique<ScopedDefaultResource>(gpu_memory_.get());
  pinned_memory_ = std::make_unique<TrackingResource>(pinned_host_memory());
  MEMENTO_LOG_INFO("device: ", describe_device(device_), "; every tensor from its caching pool, ",
                   "plus ", format_bytes(static_cast<double>(gpu_library_workspace_bytes())),
                   " of cuBLASLt workspace");
}

void Trainer::write_run_files() {
  config_.data.validate_for_training();
  resolved_config_ = to_yaml(config_);
  seed_ = static_cast<int64_t>(config_.run.seed);
  MEMENTO_LOG_INFO("resolved config:\n", resolved_config_);
  MEMENTO_EXPECT(dp_.size() == config_.parallel.dp, ConfigError,
                 "parallel.dp = ", config_.parallel.dp, " but the data-parallel group has ",
                 dp_.size(), " ranks");
  const bool writer = groups_.world().rank() == 0;  // rank 0 writes the run's files
  if (writer) {
    fs::create_directories(config_.run.out_dir);
    std::ofstream(fs::path(config_.run.out_dir) / "config.yaml") << resolved_config_;
  }
  grad_accum_ = config_.train.grad_accum(config_.parallel.dp);
  const RunPlan run_plan = plan_run(config_, describe_device(device_));
  plan_ = run_plan.memory;
  MEMENTO_LOG_INFO(format_run_plan(run_plan));
  check_memory_budget(config_, plan_);
  if (writer)
    std::ofstream(fs::path(config_.run.out_dir) / "activations.txt")
        << format_activation_list(plan_.activations);
}

void Trainer::load_data() {
  std::optional<TokenDataset> val;
  if (!config_.data.val.empty()) val.emplace(config_.data.val, config_.data.format);
  TokenDataset train_data(config_.data.train, config_.data.format);
  train_data.check_vocab(config_.model.vocab_size);
  if (val) val->check_vocab(config_.model.vocab_size);
  data_ =
      std::make_unique<DataLoader>(std::move(train_data), std::move(val), config_.data.val_fraction,
                                   config_.train.seq_len, config_.run.seed);
  MEMENTO_LOG_INFO(data_->describe());
  if (!config_.data.tokenizer.empty()) {
    check_tokenizer_fits_model(config_.data.tokenizer, config_.model.vocab_size);
    tokenizer_text_ = serialize_tokenizer_file(config_.data.tokenizer);
  }
}

void Trainer::build_model() {
  model_ = std::make_unique<LlamaModel>(config_.model, groups_.context());
  model_->params().pad_to_multiple_of(dp_.size());  // equal shards for ZeRO-1 and checkpoints
  model_->params().allocate(config_.model.master_dtype(), device_, nullptr,
                            config_.model.compute_dtype());
  model_->params().initialize(config_.run.seed);  // the same on every rank (contract 7)
  store_ = make_activation_store(config_.memory.activation_policy);
  schedule_ = parallel::make_schedule(groups_.dims());
}

void Trainer::build_optimizer_and_reduction() {
  const OptimConfig& o = config_.optim;
  const int64_t padded = model_->params().padded_numel();
  const bool zero1 = config_.parallel.zero1 && dp_.size() > 1;
  optimizer_ = optim::make_optimizer(
      {o.name, o.beta1, o.beta2, o.eps, o.weight_decay}, model_->params(),
      zero1 ? parallel::shard_of(padded, dp_.size(), dp_.rank()) : FlatRange{0, padded});
  lr_schedule_ = {optim::schedule_from_name(o.schedule), o.lr, o.min_lr, o.warmup_steps,
                  config_.train.steps};
  // GPU buffers are reduced by NCCL over the same ranks, on its own stream (overlapping
  // backward); the MPI groups keep the host-side agreements (loss, signals).
  if (!device_.is_cpu()) groups_.create_device_twins(config_.parallel.nccl_timeout_s);
  if (dp_.size() == 1) return;
  const auto bucket =
      static_cast<int64_t>(config_.parallel.bucket_mb * 1024 * 1024 /
                           static_cast<double>(dtype_size(model_->params().dtype())));
  reducer_ = std::make_unique<parallel::GradientReducer>(model_->params().flat_grads(), grad_comm(),
                                                         std::max<int64_t>(1, bucket));
  MEMENTO_LOG_INFO("data parallel: ", dp_.size(), " ranks, ", reducer_->buckets().size(),
                   " gradient buckets of up to ", config_.parallel.bucket_mb, " MiB",
                   zero1 ? ", ZeRO-1" : "");
}

void Trainer::report_model() {
  const TrainConfig& train = config_.train;
  peak_flops_ =
      train.peak_tflops > 0 ? train.peak_tflops * 1e12 : ops::measure_gemm_peak_flops(device_);
  MEMENTO_LOG_INFO("model: ", model_->params().numel(), " parameters (",
                   model_->non_embedding_params(), " outside the embedding) on ",
                   describe_device(device_), ", ", threads_, " threads, peak ", peak_flops_ / 1e9,
                   " GFLOP/s for MFU",
                   train.peak_tflops > 0 ? " (configured)"
                   : device_.is_cpu()    ? " (measured fp32 GEMM)"
                                         : " (measured bf16 GEMM)");
}

void Trainer::resume_or_initialize(Resume resume) {
  if (resume != Resume::kNo) resume_latest(resume);
  const std::string& hf = config_.checkpoint.init_from_hf;
  if (hf.empty()) return;
  if (step_ == 0) {
    load_hf_weights(hf, config_.model, model_->params());
    MEMENTO_LOG_INFO("initialised from the Hugging Face weights in ", hf);
  } else {
    MEMENTO_LOG_INFO("checkpoint.init_from_hf (", hf, ") is not used: the run resumed at step ",
                     step_);
  }
}

void Trainer::finish_start_up() {
  if (groups_.world().rank() == 0) open_metrics_file();
  release_host_memory();  // the start-up's one-off blocks (probe, restore staging)
  record_library_baseline();
  MEMENTO_LOG_INFO("host memory at start: ", format_host_memory(account_host_memory()));
}

// Micro-batch `micro` of this step on this rank. The step's global batch is the next
// global_batch samples after the cursor; rank r of a micro-batch reads its B consecutive ones.
Batch Trainer::next_micro_batch(int64_t micro, std::vector<int32_t>& windows) {
  const int64_t B = config_.train.micro_batch;
  const int64_t skip = (micro * dp_.size() + dp_.rank()) * B;
  data_->read_train_samples(data_->cursor(), skip, B, windows.data());
  return load_batch(windows);
}

// The micro-batch in `windows`, where the model computes. A GPU run stages it in one pinned host
// buffer, reused: a copy from pinned memory has finished when copy() returns.
Batch Trainer::load_batch(const std::vector<int32_t>& windows) {
  const int64_t B = config_.train.micro_batch, T = config_.train.seq_len;
  if (device_.is_cpu()) {
    Batch batch = host_batch(B, T);
    split_windows(windows, batch);
    return batch;
  }
  if (!staging_.tokens.defined()) staging_ = host_batch(B, T, pinned_memory_.get());
  split_windows(windows, staging_);
  Batch on_device{Tensor::empty(Shape{B, T}, DType::kI32, device_),
                  Tensor::empty(Shape{B, T}, DType::kI32, device_)};
  copy(staging_.tokens, on_device.tokens);
  copy(staging_.targets, on_device.targets);
  return on_device;
}

// One training step, top to bottom: load and run forward and backward over every micro-batch
// (the schedule), reduce the gradients over the data-parallel ranks, clip, update, evaluate, log,
// and the snapshot hook.
StepMetrics Trainer::train_step() {
  const TrainConfig& train = config_.train;
  const auto start = Clock::now();
  begin_step_measurements();
  std::vector<int32_t> windows(static_cast<size_t>(train.micro_batch * (train.seq_len + 1)));
  parallel::PipelineSchedule::Step work;
  work.micro_batches = grad_accum_;
  // Every micro-batch's loss is scaled so that the summed gradients are those of the global mean.
  work.grad_scale = 1.0 / static_cast<double>(train.global_batch * train.seq_len);
  work.load = [&](int64_t micro) { return next_micro_batch(micro, windows); };
  if (reducer_) work.grads_final = [this](FlatRange range) { reducer_->grads_final(range); };

  model_->params().zero_grads();
  store_->begin_step();
  double loss_sum = schedule_->run(model_->stage(), *store_, work);  // load, forward, backward
  store_->end_step();
  data_->skip_train_samples(train.global_batch);
  loss_sum = reduce_gradients(loss_sum);  // every rank holds the sums over the dp ranks
  const double grad_norm = checked_grad_norm(loss_sum);
  const double lr = lr_schedule_.at(step_);
  staging_state_->before_mutation();  // a snapshot still reading the state finishes first
  // Clipping is fused into the update: the optimizer reads the gradients times this factor.
  optimizer_->step(model_->params(), {lr, optim::clip_factor(grad_norm, config_.optim.grad_clip)});
  gather_zero1_shards();
  StepMetrics m = step_metrics(start, loss_sum, lr, grad_norm);  // waits for the device

  if (train.eval_every > 0 && (step_ % train.eval_every == 0 || step_ == train.steps))
    m.val_loss = evaluate();
  log(m);
  snapshot_hook(agree_on_requests());
  return m;
}

void Trainer::begin_step_measurements() {
  tracked_memory().reset_peak();
  ops::reset_gemm_stats();
  // MEMENTO_PROFILE_OPS=1 times every GPU op of step 3 (after the warm-up), =N of step N.
  if (!device_.is_cpu() && profile_step_ == step_ + 1) set_op_profiling(true);
}

double Trainer::reduce_gradients(double loss_sum) {
  if (!reducer_) return loss_sum;
  reducer_->finish();  // gradients summed over the data-parallel ranks
  Tensor loss = Tensor::empty(Shape{1}, DType::kF64);
  loss.data<double>()[0] = loss_sum;
  dp_.all_reduce(loss);
  return loss.data<double>()[0];
}

double Trainer::checked_grad_norm(double loss_sum) const {
  const double grad_norm = optim::global_grad_norm(model_->params().flat_grads());
  MEMENTO_EXPECT(std::isfinite(grad_norm) && std::isfinite(loss_sum), Error, "step ", step_ + 1,
                 ": loss or gradient norm is not finite (loss sum ", loss_sum, ", grad norm ",
                 grad_norm, "); lower optim.lr or check the data");
  return grad_norm;
}

// ZeRO-1: each rank updated its shard; gather the others' updates.
void Trainer::gather_zero1_shards() {
  const FlatRange shard = optimizer_->ranges().front();
  if (optimizer_->ranges().size() == 1 && shard.size() == model_->params().padded_numel()) return;
  const TensorView values = model_->params().flat_values();
  grad_comm().all_gather(values.flat_range(shard.begin, Shape{shard.size()}), values);
  model_->params().refresh_compute();
}

StepMetrics Trainer::step_metrics(Clock::time_point start, double loss_sum, double lr,
                                  double grad_norm) {
  synchronize(device_);  // the step's time includes the GPU's work
  if (!device_.is_cpu() && profile_step_ == step_ + 1) {
    const double ms = 1e3 * seconds_since(start);
    set_op_profiling(false);
    MEMENTO_LOG_INFO("GPU ops of step ", step_ + 1, " (MEMENTO_PROFILE_OPS; events around every ",
                     "op, so the step is slower than unprofiled):\n", op_profile_report(ms));
  }
  ++step_;
  const TrainConfig& train = config_.train;
  StepMetrics m;
  m.step = step_;
  m.loss = loss_sum / static_cast<double>(train.global_batch * train.seq_len);
  m.lr = lr;
  m.grad_norm = grad_norm;
  m.seconds = seconds_since(start);
  m.tokens = static_cast<double>(train.global_batch * train.seq_len);
  m.tokens_per_second = m.tokens / m.seconds;
  m.mfu = model_->flops_per_token(train.seq_len) * m.tokens_per_second /
          (peak_flops_ * static_cast<double>(dp_.size()));
  // GEMMs on a GPU run asynchronously: their share is not timed there.
  m.gemm_share = device_.is_cpu() ? ops::gemm_stats().seconds / m.seconds : 0.0;
  m.memory_bytes = tracked_memory().current_bytes();
  m.peak_bytes = tracked_memory().peak_bytes();
  run_seconds_ += m.seconds;
  ++run_steps_;
  return m;
}

// Signals are served at step boundaries, and every rank must agree on what to do.
Trainer::Requests Trainer::agree_on_requests() {
  Tensor request = Tensor::empty(Shape{2}, DType::kI32);
  request.data<int32_t>()[0] = stop_signal();  // 0 while none asked to stop
  request.data<int32_t>()[1] = take_save_request() ? 1 : 0;
  groups_.world().all_reduce(request, parallel::ReduceOp::kMax);
  return {request.data<int32_t>()[0], request.data<int32_t>()[1] != 0};
}

// Checkpoints between steps: the periodic ones and those a signal asked for. A stop ends the
// run, whose last save run() makes.
void Trainer::snapshot_hook(const Requests& requests) {
  if (requests.stop_signal != 0) {
    MEMENTO_LOG_WARN("stop requested (", signal_name(requests.stop_signal),
                     "): saving a checkpoint at step ", step_, " and exiting with code ",
                     kExitPreempted);
    stopped_ = true;
    return;
  }
  const bool periodic = config_.checkpoint.every > 0 && step_ % config_.checkpoint.every == 0;
  if ((periodic || requests.save) && step_ != last_step_) {
    save();
    release_host_memory();  // its staging blocks are not the steps' sizes
  }
  trim_host_memory();  // cached blocks the step did not reuse
}

std::vector<StepMetrics> Trainer::run(int64_t stop_at_step) {
  const TrainConfig& train = config_.train;
  last_step_ = stop_at_step >= 0 ? std::min(stop_at_step, train.steps) : train.steps;
  if (step_ >= train.steps) {
    MEMENTO_LOG_INFO("the run is finished: ", step_, " of ", train.steps, " steps trained; ",
                     "nothing to do (raise train.steps to train further)");
    return {};
  }
  MEMENTO_LOG_INFO("training steps ", step_ + 1, "..", last_step_, " of ", train.steps, ": ",
                   train.global_batch, " sequences x ", train.seq_len, " tokens per step (",
                   grad_accum_, " micro-batches of ", train.micro_batch, " on each of ", dp_.size(),
                   " data-parallel ranks)");
  std::vector<StepMetrics> history;
  interval_ = {};
  while (step_ < last_step_ && !stopped_) history.push_back(train_step());
  // A stop (SIGTERM or stop_at_step) always leaves a checkpoint to resume from; the end of
  // training leaves one unless checkpoint.at_end is false (benchmarks).
  const bool stop = stopped_ || stop_at_step >= 0;
  if ((run_steps_ > 0 || stop_at_step >= 0) && (stop || config_.checkpoint.at_end)) save();
  return history;
}

double Trainer::evaluate() {
  const int64_t B = config_.train.micro_batch, T = config_.train.seq_len;
  std::vector<int32_t> windows(static_cast<size_t>(B * (T + 1)));
  Tensor sums = Tensor::zeros(Shape{2}, DType::kF64);  // loss sum, token count
  // The data-parallel ranks split the validation batches between them.
  for (int64_t i = dp_.rank(); i < config_.train.eval_batches; i += dp_.size()) {
    data_->val_batch(i, B, windows.data());
    const Batch batch = load_batch(windows);
    const ops::CrossEntropyResult r = model_->forward_loss(batch.tokens, batch.targets);
    sums.data<double>()[0] += r.loss_sum;
    sums.data<double>()[1] += static_cast<double>(r.count);
  }
  dp_.all_reduce(sums);
  return sums.data<double>()[0] / sums.data<double>()[1];
}

}  // namespace memento
