#include "launch/trainer.h"

#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <sstream>

#include "checkpoint/hdf5_checkpoint.h"
#include "core/data/tokenizer.h"
#include "core/device.h"
#include "core/host_memory.h"
#include "core/log.h"
#include "core/ops/matmul.h"
#include "core/parallel/self_communicator.h"
#include "core/threads.h"
#include "launch/bootstrap.h"
#include "launch/hf_weights.h"
#include "launch/run_plan.h"
#include "launch/signals.h"
#include "optim/grad_clip.h"

namespace memento {
namespace {

// The host's physical memory in bytes, 0 when the system does not say.
size_t physical_memory_bytes() {
  const long pages = sysconf(_SC_PHYS_PAGES);
  const long page = sysconf(_SC_PAGE_SIZE);
  return pages > 0 && page > 0 ? static_cast<size_t>(pages) * static_cast<size_t>(page) : 0;
}

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

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

std::string format_duration(double seconds) {
  const auto s = static_cast<int64_t>(seconds);
  char buf[32];
  if (s >= 3600) {
    std::snprintf(buf, sizeof(buf), "%lldh%02lldm", static_cast<long long>(s / 3600),
                  static_cast<long long>(s % 3600 / 60));
  } else {
    std::snprintf(buf, sizeof(buf), "%lldm%02llds", static_cast<long long>(s / 60),
                  static_cast<long long>(s % 60));
  }
  return buf;
}

// Registers the part of `buffer` that lies in `range` of the flat parameter layout, one entry per
// parameter: the whole tensor, or a slice of it where the range cuts through it. buffer[0] is
// flat offset `origin`.
void add_flat_range(checkpoint::StateRegistry& registry, const std::string& prefix,
                    const ParameterSet& params, const TensorView& buffer, int64_t origin,
                    FlatRange range) {
  for (const auto& e : params.entries()) {
    const int64_t begin = std::max(e.offset, range.begin);
    const int64_t end = std::min(e.offset + e.shape.numel(), range.end);
    if (begin >= end) continue;
    if (end - begin == e.shape.numel()) {
      registry.add_tensor(prefix + e.name, buffer.flat_range(e.offset - origin, e.shape));
    } else {
      registry.add_tensor_slice(prefix + e.name,
                                buffer.flat_range(begin - origin, Shape{end - begin}), e.shape,
                                begin - e.offset);
    }
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

void Trainer::init(Resume resume) {
  memory_scope_ = std::make_unique<ScopedDefaultResource>(&memory_);
  if (config_.memory.budget_bytes > 0) {
    budget_ = std::make_unique<LimitResource>(
        &memory_, static_cast<size_t>(config_.memory.budget_bytes), "memory.budget_bytes");
    budget_scope_ = std::make_unique<ScopedDefaultResource>(budget_.get());
  }
  const int threads = set_num_threads(static_cast<int>(config_.train.threads));
  if (config_.model.on_cuda()) {
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
  config_.data.validate_for_training();
  resolved_config_ = to_yaml(config_);
  seed_ = static_cast<int64_t>(config_.run.seed);
  MEMENTO_LOG_INFO("resolved config:\n", resolved_config_);

  const int dp_size = dp_.size();
  MEMENTO_EXPECT(dp_size == config_.parallel.dp, ConfigError, "parallel.dp = ", config_.parallel.dp,
                 " but the data-parallel group has ", dp_size, " ranks");
  const bool writer = groups_.world().rank() == 0;  // rank 0 writes the run's files
  if (writer) {
    fs::create_directories(config_.run.out_dir);
    std::ofstream out(fs::path(config_.run.out_dir) / "config.yaml");
    out << resolved_config_;
  }

  const TrainConfig& train = config_.train;
  grad_accum_ = train.grad_accum(config_.parallel.dp);
  const bool zero1 = config_.parallel.zero1 && dp_size > 1;
  const RunPlan run_plan = plan_run(config_, describe_device(device_));
  plan_ = run_plan.memory;
  MEMENTO_LOG_INFO(format_run_plan(run_plan));
  check_memory_budget(config_, plan_);
  if (writer) {
    std::ofstream out(fs::path(config_.run.out_dir) / "activations.txt");
    out << format_activation_list(plan_.activations);
  }

  // Data first: a bad dataset should fail before gigabytes are allocated.
  std::optional<TokenDataset> val;
  if (!config_.data.val.empty()) val.emplace(config_.data.val, config_.data.format);
  TokenDataset train_data(config_.data.train, config_.data.format);
  train_data.check_vocab(config_.model.vocab_size);
  if (val) val->check_vocab(config_.model.vocab_size);
  data_ = std::make_unique<DataLoader>(std::move(train_data), std::move(val),
                                       config_.data.val_fraction, train.seq_len, config_.run.seed);
  MEMENTO_LOG_INFO(data_->describe());
  if (!config_.data.tokenizer.empty()) {
    check_tokenizer_fits_model(config_.data.tokenizer, config_.model.vocab_size);
    tokenizer_text_ = serialize_tokenizer_file(config_.data.tokenizer);
  }

  model_ = std::make_unique<LlamaModel>(config_.model);
  model_->params().pad_to_multiple_of(dp_size);  // equal shards for ZeRO-1 and checkpoints
  model_->params().allocate(config_.model.master_dtype(), device_, nullptr,
                            config_.model.compute_dtype());
  model_->params().initialize(config_.run.seed);  // the same on every rank (contract 7)
  const int64_t padded = model_->params().padded_numel();
  const OptimConfig& o = config_.optim;
  optimizer_ = std::make_unique<optim::AdamW>(
      model_->params(), optim::AdamWOptions{o.beta1, o.beta2, o.eps, o.weight_decay},
      zero1 ? parallel::shard_of(padded, dp_size, dp_.rank()) : FlatRange{0, padded});
  // GPU buffers are reduced by NCCL over the same ranks, on its own stream (overlapping
  // backward); the MPI groups keep the host-side agreements (loss, signals).
  if (!device_.is_cpu()) groups_.create_device_twins(config_.parallel.nccl_timeout_s);
  if (dp_size > 1) {
    const auto bucket =
        static_cast<int64_t>(config_.parallel.bucket_mb * 1024 * 1024 /
                             static_cast<double>(dtype_size(config_.model.master_dtype())));
    reducer_ = std::make_unique<parallel::GradientReducer>(
        model_->params().flat_grads(), grad_comm(), std::max<int64_t>(1, bucket));
    MEMENTO_LOG_INFO("data parallel: ", dp_size, " ranks, ", reducer_->buckets().size(),
                     " gradient buckets of up to ", config_.parallel.bucket_mb, " MiB",
                     zero1 ? ", ZeRO-1" : "");
  }
  schedule_ = {optim::schedule_from_name(o.schedule), o.lr, o.min_lr, o.warmup_steps, train.steps};
  register_state();

  peak_flops_ = train.peak_tflops > 0 ? train.peak_tflops * 1e12 : measure_peak_flops();
  MEMENTO_LOG_INFO("model: ", model_->params().numel(), " parameters (",
                   model_->non_embedding_params(), " outside the embedding) on ",
                   describe_device(device_), ", ", threads, " threads, peak ", peak_flops_ / 1e9,
                   " GFLOP/s for MFU",
                   train.peak_tflops > 0 ? " (configured)"
                   : device_.is_cpu()    ? " (measured fp32 GEMM)"
                                         : " (measured bf16 GEMM)");

  if (resume != Resume::kNo) resume_latest(resume);
  if (const std::string& hf = config_.checkpoint.init_from_hf; !hf.empty()) {
    if (step_ == 0) {
      load_hf_weights(hf, config_.model, model_->params());
      MEMENTO_LOG_INFO("initialised from the Hugging Face weights in ", hf);
    } else {
      MEMENTO_LOG_INFO("checkpoint.init_from_hf (", hf, ") is not used: the run resumed at step ",
                       step_);
    }
  }
  if (writer) open_metrics_file();
  release_host_memory();  // the start-up's one-off blocks (probe, restore staging)
  record_library_baseline();
  MEMENTO_LOG_INFO("host memory at start: ", format_host_memory(account_host_memory()));
}

void Trainer::resume_latest(Resume resume) {
  const std::string& root = config_.checkpoint.dir;
  const checkpoint::CheckpointSearch search = checkpoint::search_checkpoints(root);
  for (const std::string& tmp : search.unfinished)
    MEMENTO_LOG_WARN("--resume: ignoring ", tmp, ": a save that never finished");
  for (const checkpoint::SkippedCheckpoint& s : search.skipped)
    MEMENTO_LOG_WARN("--resume: skipping ", s.dir, ": ", s.reason);
  if (search.found) {
    restore(*search.found);
    if (!search.skipped.empty()) {
      MEMENTO_LOG_WARN("--resume: ", search.skipped.size(), " newer checkpoint",
                       search.skipped.size() > 1 ? "s" : "", " could not be used (above); the ",
                       "steps after ", step_, " are trained again");
    }
    return;
  }
  if (search.skipped.empty()) {
    MEMENTO_LOG_INFO("--resume: no checkpoint under ", root, " yet; starting from step 0");
    return;
  }
  MEMENTO_EXPECT(resume == Resume::kLatestOrScratch, CheckpointError, root, ": --resume: none of ",
                 "its ", search.skipped.size(), " checkpoints verifies (",
                 search.skipped.front().dir, ": ", search.skipped.front().reason,
                 "); refusing to start over from step 0. ",
                 "Repair or move them, or pass --resume=auto-fallback to start from step 0");
  MEMENTO_LOG_WARN("--resume=auto-fallback: none of the ", search.skipped.size(),
                   " checkpoints under ", root, " verifies; starting from step 0");
}

// metrics.jsonl holds one series: a fresh run starts it anew, a resumed run drops the records of
// the steps after the one it resumed from (a killed run's last steps, trained again now).
void Trainer::open_metrics_file() {
  const fs::path path = fs::path(config_.run.out_dir) / "metrics.jsonl";
  if (step_ > 0 && fs::exists(path)) {
    std::ifstream in(path);
    std::string kept;
    for (std::string line; std::getline(in, line);) {
      long long step = 0;
      if (std::sscanf(line.c_str(), "{\"step\": %lld", &step) == 1 && step > step_) continue;
      kept += line + "\n";
    }
    in.close();
    const fs::path tmp = path.string() + ".tmp";
    std::ofstream(tmp, std::ios::trunc) << kept;
    fs::rename(tmp, path);
  }
  metrics_file_.open(path, step_ > 0 ? std::ios::app : std::ios::trunc);
  MEMENTO_EXPECT(metrics_file_.good(), Error, path.string(), ": cannot open for writing");
}

Trainer::~Trainer() = default;

void Trainer::register_state() {
  const ParameterSet& params = model_->params();
  const FlatRange all{0, params.padded_numel()};
  const FlatRange mine = parallel::shard_of(all.end, dp_.size(), dp_.rank());
  const FlatRange states = optimizer_->shard();
  TensorView values = params.flat_values();
  TensorView exp_avg = optimizer_->exp_avg();
  TensorView exp_avg_sq = optimizer_->exp_avg_sq();
  if (!device_.is_cpu()) {
    // Checkpoints read and write host memory: the GPU's buffers are staged through copies
    // (copy_state_to_host before a save, copy_state_from_host after a load).
    // Zeros: a load fills only the parameters, and the alignment padding between them must stay
    // zero on the GPU (the optimizer updates whole runs of the buffers, padding included).
    // Pinned, so that a save or a resume copies at the link's full speed, unless the node's
    // ranks together would lock more than half of its memory (locked pages cannot be swapped or
    // reclaimed); pageable (slower copies) then, or when the host refuses to lock them.
    const size_t mirror_bytes = values.bytes() + exp_avg.bytes() + exp_avg_sq.bytes();
    const size_t node_bytes = physical_memory_bytes();
    const bool pin =
        node_bytes == 0 || mirror_bytes * static_cast<size_t>(local_ranks_) <= node_bytes / 2;
    if (!pin)
      MEMENTO_LOG_INFO("checkpoint staging: ", local_ranks_, " ranks x ",
                       format_bytes(static_cast<double>(mirror_bytes)),
                       " would lock more than half of the node's ",
                       format_bytes(static_cast<double>(node_bytes)),
                       "; using pageable host memory (slower checkpoint copies)");
    const auto mirror = [&](const TensorView& like) {
      if (pin) {
        try {
          return Tensor::zeros(like.shape(), like.dtype(), Device::cpu(), pinned_memory_.get());
        } catch (const OutOfMemoryError& e) {
          MEMENTO_LOG_WARN("checkpoint staging: ", e.what(), "; using pageable host memory");
        }
      }
      return Tensor::zeros(like.shape(), like.dtype());
    };
    host_values_ = mirror(values);
    host_exp_avg_ = mirror(exp_avg);
    host_exp_avg_sq_ = mirror(exp_avg_sq);
    MEMENTO_LOG_INFO("checkpoint staging: host copies of the values and optimizer states, ",
                     format_bytes(static_cast<double>(host_values_.bytes() + host_exp_avg_.bytes() +
                                                      host_exp_avg_sq_.bytes())),
                     " (", format_bytes(static_cast<double>(pinned_memory_->current_bytes())),
                     " of it pinned)");
    values = host_values_;
    exp_avg = host_exp_avg_;
    exp_avg_sq = host_exp_avg_sq_;
  }
  // Saving: each data-parallel rank writes its 1/dp of every buffer, so no byte is written twice.
  add_flat_range(save_state_, "model/", params, values, 0, mine);
  add_flat_range(save_state_, "optim/exp_avg/", params, exp_avg, states.begin, mine);
  add_flat_range(save_state_, "optim/exp_avg_sq/", params, exp_avg_sq, states.begin, mine);
  // Loading: everything this rank holds, assembled from however many ranks wrote it.
  add_flat_range(load_state_, "model/", params, values, 0, all);
  add_flat_range(load_state_, "optim/exp_avg/", params, exp_avg, states.begin, states);
  add_flat_range(load_state_, "optim/exp_avg_sq/", params, exp_avg_sq, states.begin, states);
  for (checkpoint::StateRegistry* r : {&save_state_, &load_state_}) {
    r->add_int("state/step", &step_);
    r->add_int("state/optimizer_step", &optimizer_->step_count());
    r->add_int("state/data_epoch", &data_epoch_);
    r->add_int("state/data_index", &data_index_);
    r->add_int("state/seed", &seed_);
    r->add_string("meta/config", &resolved_config_);
    r->add_string("meta/tokenizer", &tokenizer_text_);
  }
}

void Trainer::copy_state_to_host() {
  if (device_.is_cpu()) return;
  copy(model_->params().flat_values(), host_values_);
  copy(optimizer_->exp_avg(), host_exp_avg_);
  copy(optimizer_->exp_avg_sq(), host_exp_avg_sq_);
}

void Trainer::copy_state_from_host() {
  if (device_.is_cpu()) return;
  copy(host_values_, model_->params().flat_values());
  copy(host_exp_avg_, optimizer_->exp_avg());
  copy(host_exp_avg_sq_, optimizer_->exp_avg_sq());
  model_->params().refresh_compute();
}

void Trainer::restore(const std::string& checkpoint_dir) {
  // Refuse a checkpoint of another model before reading any tensor, naming the keys that differ.
  // The device, and f32 vs bf16 mixed precision (both keep fp32 masters), may change.
  ModelConfig saved = parse_model_config(checkpoint::read_string(checkpoint_dir, "meta/config"),
                                         checkpoint_dir + "/meta/config");
  saved.device = config_.model.device;
  if (saved.master_dtype() == config_.model.master_dtype()) saved.dtype = config_.model.dtype;
  const auto diffs = diff_model(saved, config_.model);
  if (!diffs.empty()) {
    std::string list;
    for (const auto& d : diffs) list += (list.empty() ? "" : "; ") + d;
    throw CheckpointError(detail::concat(
        checkpoint_dir, ": checkpoint is for another model: ", list, " (checkpoint vs config)"));
  }
  const std::string config_text = resolved_config_;
  const int64_t saved_world = checkpoint::read_checkpoint_info(checkpoint_dir).world;
  checkpoint::load_checkpoint(load_state_, checkpoint_dir, dp_.rank());
  copy_state_from_host();
  resolved_config_ = config_text;  // the run continues under its own (possibly edited) config
  data_->set_cursor(DataCursor{data_epoch_, data_index_});
  MEMENTO_LOG_INFO("resumed from ", checkpoint_dir, " at step ", step_, " (data epoch ",
                   data_epoch_, ", sample ", data_index_, ")",
                   saved_world != dp_.size()
                       ? detail::concat("; saved with ", saved_world, " data-parallel ranks, ",
                                        "resharded to ", dp_.size())
                       : std::string());
}

void Trainer::save() {
  const DataCursor cursor = data_->cursor();
  data_epoch_ = cursor.epoch;
  data_index_ = cursor.index;
  const auto start = Clock::now();
  copy_state_to_host();
  checkpoint::save_checkpoint(save_state_, config_.checkpoint.dir, step_, dp_.rank(), dp_.size(),
                              [this] { dp_.barrier(); });
  if (dp_.rank() == 0)
    checkpoint::prune_checkpoints(config_.checkpoint.dir,
                                  static_cast<int>(config_.checkpoint.keep));
  MEMENTO_LOG_INFO("checkpoint: step ", step_, " saved to ", config_.checkpoint.dir, " in ",
                   seconds_since(start), " s");
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

// One training step: load, forward, backward, reduce, clip, update.
StepMetrics Trainer::train_step() {
  const TrainConfig& train = config_.train;
  const int64_t T = train.seq_len;
  const auto start = Clock::now();
  tracked_memory().reset_peak();
  ops::reset_gemm_stats();
  // MEMENTO_PROFILE_OPS=1 times every GPU op of step 3 (after the warm-up), =N of step N.
  const bool profile = !device_.is_cpu() && profile_step_ == step_ + 1;
  if (profile) set_op_profiling(true);
  std::vector<int32_t> windows(static_cast<size_t>(train.micro_batch * (T + 1)));
  // Every micro-batch's loss is scaled so that the summed gradients are those of the global mean.
  const double grad_scale = 1.0 / static_cast<double>(train.global_batch * T);
  const auto reduce = [this](FlatRange range) { reducer_->grads_final(range); };

  model_->params().zero_grads();
  double loss_sum = 0;
  for (int64_t micro = 0; micro < grad_accum_; ++micro) {
    const Batch batch = next_micro_batch(micro, windows);
    const bool last = micro + 1 == grad_accum_;
    const LlamaModel::GradsFinalHook hook =
        reducer_ && last ? LlamaModel::GradsFinalHook(reduce) : nullptr;
    loss_sum += model_->forward_backward(store_, batch.tokens, batch.targets, grad_scale, hook,
                                         micro)
                    .loss_sum;
    store_.clear_records();  // the dry run lists them; a step keeps none (nothing is live now)
  }
  data_->skip_train_samples(train.global_batch);
  if (reducer_) {
    reducer_->finish();  // gradients summed over the data-parallel ranks
    Tensor loss = Tensor::empty(Shape{1}, DType::kF64);
    loss.data<double>()[0] = loss_sum;
    dp_.all_reduce(loss);
    loss_sum = loss.data<double>()[0];
  }
  const TensorView grads = model_->params().flat_grads();
  const double grad_norm = optim::global_grad_norm(grads);  // every rank holds the full sum
  MEMENTO_EXPECT(std::isfinite(grad_norm) && std::isfinite(loss_sum), Error, "step ", step_ + 1,
                 ": loss or gradient norm is not finite (loss sum ", loss_sum, ", grad norm ",
                 grad_norm, "); lower optim.lr or check the data");
  const double lr = schedule_.at(step_);
  // Clipping is fused into the update: the optimizer reads the gradients times this factor.
  optimizer_->step(model_->params(), lr, optim::clip_factor(grad_norm, config_.optim.grad_clip));
  if (optimizer_->shard().size() < model_->params().padded_numel()) {
    // ZeRO-1: each rank updated its shard; gather the others' updates.
    const TensorView values = model_->params().flat_values();
    const FlatRange shard = optimizer_->shard();
    grad_comm().all_gather(values.flat_range(shard.begin, Shape{shard.size()}), values);
    model_->params().refresh_compute();
  }
  synchronize(device_);  // the step's time includes the GPU's work
  if (profile) {
    const double ms = 1e3 * seconds_since(start);
    set_op_profiling(false);
    MEMENTO_LOG_INFO("GPU ops of step ", step_ + 1, " (MEMENTO_PROFILE_OPS; events around every ",
                     "op, so the step is slower than unprofiled):\n", op_profile_report(ms));
  }
  ++step_;

  StepMetrics m;
  m.step = step_;
  m.loss = loss_sum / static_cast<double>(train.global_batch * T);
  m.lr = lr;
  m.grad_norm = grad_norm;
  m.seconds = seconds_since(start);
  m.tokens = static_cast<double>(train.global_batch * T);
  m.tokens_per_second = m.tokens / m.seconds;
  m.mfu = model_->flops_per_token(T) * m.tokens_per_second /
          (peak_flops_ * static_cast<double>(dp_.size()));
  // GEMMs on a GPU run asynchronously: their share is not timed there.
  m.gemm_share = device_.is_cpu() ? ops::gemm_stats().seconds / m.seconds : 0.0;
  m.memory_bytes = tracked_memory().current_bytes();
  m.peak_bytes = tracked_memory().peak_bytes();
  return m;
}

std::vector<StepMetrics> Trainer::run(int64_t stop_at_step) {
  const TrainConfig& train = config_.train;
  const int64_t last = stop_at_step >= 0 ? std::min(stop_at_step, train.steps) : train.steps;
  if (step_ >= train.steps) {
    MEMENTO_LOG_INFO("the run is finished: ", step_, " of ", train.steps, " steps trained; ",
                     "nothing to do (raise train.steps to train further)");
    return {};
  }
  MEMENTO_LOG_INFO("training steps ", step_ + 1, "..", last, " of ", train.steps, ": ",
                   train.global_batch, " sequences x ", train.seq_len, " tokens per step (",
                   grad_accum_, " micro-batches of ", train.micro_batch, " on each of ", dp_.size(),
                   " data-parallel ranks)");
  std::vector<StepMetrics> history;
  LogInterval interval;  // the steps since the last metrics line
  while (step_ < last) {
    StepMetrics m = train_step();
    run_seconds_ += m.seconds;
    ++run_steps_;
    interval.add(m);
    if (train.eval_every > 0 && (step_ % train.eval_every == 0 || step_ == train.steps))
      m.val_loss = evaluate();
    if (step_ % train.log_every == 0 || m.val_loss || step_ == last) {
      log(m, interval);
      interval = {};
    }
    history.push_back(m);

    // Signals are served at step boundaries, and every rank must agree on what to do.
    Tensor request = Tensor::empty(Shape{2}, DType::kI32);
    request.data<int32_t>()[0] = stop_signal();  // 0 while none asked to stop
    request.data<int32_t>()[1] = take_save_request() ? 1 : 0;
    groups_.world().all_reduce(request, parallel::ReduceOp::kMax);
    if (request.data<int32_t>()[0] != 0) {
      MEMENTO_LOG_WARN("stop requested (", signal_name(request.data<int32_t>()[0]),
                       "): saving a checkpoint at step ", step_, " and exiting with code ",
                       kExitPreempted);
      stopped_ = true;
      break;
    }
    const bool periodic = config_.checkpoint.every > 0 && step_ % config_.checkpoint.every == 0;
    if ((periodic || request.data<int32_t>()[1] != 0) && step_ != last) {
      save();
      release_host_memory();  // its staging blocks are not the steps' sizes
    }
    trim_host_memory();  // cached blocks the step did not reuse
  }
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

void Trainer::log(const StepMetrics& m, const LogInterval& interval) {
  const double eta = run_steps_ > 0 ? run_seconds_ / static_cast<double>(run_steps_) *
                                          static_cast<double>(config_.train.steps - m.step)
                                    : 0.0;
  // Loss, throughput and MFU are means over the steps since the last line (Megatron's
  // convention); the gradient norm, learning rate and memory are the last step's.
  const double loss = interval.loss_sum / static_cast<double>(std::max<int64_t>(1, interval.steps));
  const double tokens_per_second = interval.tokens / std::max(interval.seconds, 1e-9);
  const double mfu = model_->flops_per_token(config_.train.seq_len) * tokens_per_second /
                     (peak_flops_ * static_cast<double>(dp_.size()));
  if (mfu > 1.0 && !warned_mfu_) {
    warned_mfu_ = true;
    MEMENTO_LOG_WARN("MFU ", 100.0 * mfu, "% is above 100%: the peak of ", peak_flops_ / 1e9,
                     " GFLOP/s ",
                     config_.train.peak_tflops > 0 ? "set by train.peak_tflops"
                                                   : "measured at start (on a busy machine?)",
                     " is too low; set train.peak_tflops to this machine's peak");
  }
  const ProcessMemory host = read_process_memory();
  char line[400];
  std::snprintf(
      line, sizeof(line),
      "step %5lld/%lld | loss %.4f | lr %.3e | grad norm %.3f | %.0f tok/s | MFU %.1f%% | "
      "mem %s (peak %s) | rss %s | ETA %s",
      static_cast<long long>(m.step), static_cast<long long>(config_.train.steps), loss, m.lr,
      m.grad_norm, tokens_per_second, 100.0 * mfu,
      format_bytes(static_cast<double>(m.memory_bytes)).c_str(),
      format_bytes(static_cast<double>(m.peak_bytes)).c_str(),
      format_bytes(static_cast<double>(host.resident)).c_str(), format_duration(eta).c_str());
  std::string text = line;
  if (interval.steps > 1) text += detail::concat(" | mean of ", interval.steps, " steps");
  if (m.val_loss) text += detail::concat(" | val loss ", *m.val_loss);
  MEMENTO_LOG_INFO(text);

  if (!metrics_file_.is_open()) return;
  std::snprintf(line, sizeof(line),
                "{\"step\": %lld, \"loss\": %.6f, \"lr\": %.6e, \"grad_norm\": %.6f, "
                "\"tokens_per_s\": %.1f, \"mfu\": %.5f, \"mem_bytes\": %zu, \"peak_bytes\": %zu, "
                "\"rss_bytes\": %zu, \"rss_anon_bytes\": %zu, \"gemm_share\": %.4f, "
                "\"interval_steps\": %lld, \"interval_s\": %.4f, \"eta_s\": %.1f",
                static_cast<long long>(m.step), loss, m.lr, m.grad_norm, tokens_per_second, mfu,
                m.memory_bytes, m.peak_bytes, host.resident, host.anonymous, m.gemm_share,
                static_cast<long long>(interval.steps), interval.seconds, eta);
  metrics_file_ << line;
  if (m.val_loss) metrics_file_ << detail::concat(", \"val_loss\": ", *m.val_loss);
  metrics_file_ << "}\n";
  metrics_file_.flush();
}

double Trainer::measure_peak_flops() const { return ops::measure_gemm_peak_flops(device_); }

}  // namespace memento
