#include "launch/trainer.h"

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <sstream>

#include "checkpoint/hdf5_checkpoint.h"
#include "core/log.h"
#include "core/ops/matmul.h"
#include "core/threads.h"
#include "optim/grad_clip.h"

namespace memento {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

constexpr size_t kAdamWBytesPerParam = 2 * sizeof(float);

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

// A batch of B windows of T + 1 tokens split into inputs and next-token targets, both (B, T).
struct Batch {
  Tensor tokens;
  Tensor targets;
};
Batch split_windows(const std::vector<int32_t>& windows, int64_t B, int64_t T) {
  Batch b{Tensor::empty(Shape{B, T}, DType::kI32), Tensor::empty(Shape{B, T}, DType::kI32)};
  for (int64_t i = 0; i < B; ++i) {
    const int32_t* w = windows.data() + i * (T + 1);
    std::copy(w, w + T, b.tokens.data<int32_t>() + i * T);
    std::copy(w + 1, w + T + 1, b.targets.data<int32_t>() + i * T);
  }
  return b;
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

std::string read_text_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  MEMENTO_EXPECT(in.good(), DataError, path, ": cannot open tokenizer file");
  std::ostringstream os;
  os << in.rdbuf();
  return os.str();
}

}  // namespace

Trainer::Trainer(Config config, bool resume)
    : config_(std::move(config)), memory_(default_resource(Device::cpu())) {
  memory_scope_ = std::make_unique<ScopedDefaultResource>(&memory_);
  if (config_.memory.budget_bytes > 0) {
    budget_ = std::make_unique<LimitResource>(&memory_,
                                              static_cast<size_t>(config_.memory.budget_bytes));
    budget_scope_ = std::make_unique<ScopedDefaultResource>(budget_.get());
  }
  const int threads = set_num_threads(static_cast<int>(config_.train.threads));
  config_.data.validate_for_training();
  resolved_config_ = to_yaml(config_);
  seed_ = static_cast<int64_t>(config_.run.seed);
  MEMENTO_LOG_INFO("resolved config:\n", resolved_config_);

  fs::create_directories(config_.run.out_dir);
  {
    std::ofstream out(fs::path(config_.run.out_dir) / "config.yaml");
    out << resolved_config_;
  }

  const TrainConfig& train = config_.train;
  grad_accum_ = train.grad_accum(config_.parallel.dp);
  plan_ = plan_memory(config_.model, train.micro_batch, train.seq_len, kAdamWBytesPerParam);
  MEMENTO_LOG_INFO(format_memory_table(
      plan_, detail::concat("memory plan (per rank, ", dtype_name(config_.model.dtype),
                            " on cpu, micro-batch ", train.micro_batch, " x ", train.seq_len, ")")));
  {
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
  if (!config_.data.tokenizer.empty()) tokenizer_text_ = read_text_file(config_.data.tokenizer);

  model_ = std::make_unique<LlamaModel>(config_.model);
  model_->params().allocate(config_.model.dtype);
  model_->params().initialize(config_.run.seed);
  const OptimConfig& o = config_.optim;
  optimizer_ = std::make_unique<optim::AdamW>(
      model_->params(), optim::AdamWOptions{o.beta1, o.beta2, o.eps, o.weight_decay});
  schedule_ = {optim::schedule_from_name(o.schedule), o.lr, o.min_lr, o.warmup_steps, train.steps};
  register_state();

  peak_flops_ = train.peak_tflops > 0 ? train.peak_tflops * 1e12 : measure_peak_flops();
  MEMENTO_LOG_INFO("model: ", model_->params().numel(), " parameters (",
                   model_->non_embedding_params(), " outside the embedding), ", threads,
                   " threads, peak ", peak_flops_ / 1e9, " GFLOP/s for MFU",
                   train.peak_tflops > 0 ? " (configured)" : " (measured fp32 GEMM)");

  if (resume) {
    const auto latest = checkpoint::find_latest(config_.checkpoint.dir);
    if (latest) {
      restore(*latest);
    } else {
      MEMENTO_LOG_WARN("--resume: no complete checkpoint under ", config_.checkpoint.dir,
                       "; starting from step 0");
    }
  }
  metrics_file_.open(fs::path(config_.run.out_dir) / "metrics.jsonl",
                     step_ > 0 ? std::ios::app : std::ios::trunc);
}

Trainer::~Trainer() = default;

void Trainer::register_state() {
  const ParameterSet& params = model_->params();
  for (const auto& e : params.entries()) {
    const TensorView value = params.flat_values().flat_range(e.offset, e.shape);
    state_.add_tensor("model/" + e.name, value);
    state_.add_tensor("optim/exp_avg/" + e.name,
                      optimizer_->exp_avg().flat_range(e.offset, e.shape));
    state_.add_tensor("optim/exp_avg_sq/" + e.name,
                      optimizer_->exp_avg_sq().flat_range(e.offset, e.shape));
  }
  state_.add_int("state/step", &step_);
  state_.add_int("state/optimizer_step", &optimizer_->step_count());
  state_.add_int("state/data_epoch", &data_epoch_);
  state_.add_int("state/data_index", &data_index_);
  state_.add_int("state/seed", &seed_);
  state_.add_string("meta/config", &resolved_config_);
  state_.add_string("meta/tokenizer", &tokenizer_text_);
}

void Trainer::restore(const std::string& checkpoint_dir) {
  // Refuse a checkpoint of another model before reading any tensor, naming the keys that differ.
  const ModelConfig saved = parse_model_config(
      checkpoint::read_string(checkpoint_dir, "meta/config"), checkpoint_dir + "/meta/config");
  const auto diffs = diff_model(saved, config_.model);
  if (!diffs.empty()) {
    std::string list;
    for (const auto& d : diffs) list += (list.empty() ? "" : "; ") + d;
    throw CheckpointError(detail::concat(checkpoint_dir, ": checkpoint is for another model: ",
                                         list, " (checkpoint vs config)"));
  }
  const std::string config_text = resolved_config_;
  checkpoint::load_checkpoint(state_, checkpoint_dir);
  resolved_config_ = config_text;  // the run continues under its own (possibly edited) config
  data_->set_cursor(DataCursor{data_epoch_, data_index_});
  MEMENTO_LOG_INFO("resumed from ", checkpoint_dir, " at step ", step_, " (data epoch ",
                   data_epoch_, ", sample ", data_index_, ")");
}

void Trainer::save() {
  const DataCursor cursor = data_->cursor();
  data_epoch_ = cursor.epoch;
  data_index_ = cursor.index;
  const auto start = Clock::now();
  checkpoint::save_checkpoint(state_, config_.checkpoint.dir, step_);
  checkpoint::prune_checkpoints(config_.checkpoint.dir, static_cast<int>(config_.checkpoint.keep));
  MEMENTO_LOG_INFO("checkpoint: step ", step_, " saved to ", config_.checkpoint.dir, " in ",
                   seconds_since(start), " s");
}

// One training step: load, forward, backward, (reduce), clip, update, log.
StepMetrics Trainer::train_step() {
  const TrainConfig& train = config_.train;
  const int64_t B = train.micro_batch, T = train.seq_len;
  const auto start = Clock::now();
  memory_.reset_peak();
  ops::reset_gemm_stats();
  std::vector<int32_t> windows(static_cast<size_t>(B * (T + 1)));
  // Every micro-batch's loss is scaled so that the gradients are those of the global mean.
  const double grad_scale = 1.0 / static_cast<double>(train.global_batch * T);

  model_->params().zero_grads();
  double loss_sum = 0;
  for (int64_t micro = 0; micro < grad_accum_; ++micro) {
    data_->next_train_batch(B, windows.data());
    const Batch batch = split_windows(windows, B, T);
    const ops::CrossEntropyResult r =
        model_->forward_backward(store_, batch.tokens, batch.targets, grad_scale);
    loss_sum += r.loss_sum;
  }
  // Gradient reduction over data-parallel ranks plugs in here (distributed issue).
  const TensorView grads = model_->params().flat_grads();
  const double grad_norm = optim::global_grad_norm(grads);
  MEMENTO_EXPECT(std::isfinite(grad_norm) && std::isfinite(loss_sum), Error, "step ", step_ + 1,
                 ": loss or gradient norm is not finite (loss sum ", loss_sum, ", grad norm ",
                 grad_norm, "); lower optim.lr or check the data");
  optim::clip_grad_norm(grads, grad_norm, config_.optim.grad_clip);
  const double lr = schedule_.at(step_);
  optimizer_->step(model_->params(), lr);
  ++step_;

  StepMetrics m;
  m.step = step_;
  m.loss = loss_sum / static_cast<double>(train.global_batch * T);
  m.lr = lr;
  m.grad_norm = grad_norm;
  m.seconds = seconds_since(start);
  const double tokens = static_cast<double>(train.global_batch * T);
  m.tokens_per_second = tokens / m.seconds;
  m.mfu = model_->flops_per_token(T) * m.tokens_per_second / peak_flops_;
  m.gemm_share = ops::gemm_stats().seconds / m.seconds;
  m.memory_bytes = memory_.current_bytes();
  m.peak_bytes = memory_.peak_bytes();
  return m;
}

std::vector<StepMetrics> Trainer::run(int64_t stop_at_step) {
  const TrainConfig& train = config_.train;
  const int64_t last = stop_at_step >= 0 ? std::min(stop_at_step, train.steps) : train.steps;
  MEMENTO_LOG_INFO("training steps ", step_ + 1, "..", last, " of ", train.steps, ": ",
                   train.global_batch, " sequences x ", train.seq_len, " tokens per step (",
                   grad_accum_, " micro-batches of ", train.micro_batch, ")");
  std::vector<StepMetrics> history;
  while (step_ < last) {
    StepMetrics m = train_step();
    run_seconds_ += m.seconds;
    ++run_steps_;
    if (train.eval_every > 0 && (step_ % train.eval_every == 0 || step_ == train.steps))
      m.val_loss = evaluate();
    if (step_ % train.log_every == 0 || m.val_loss || step_ == last) log(m);
    if (config_.checkpoint.every > 0 && step_ % config_.checkpoint.every == 0 && step_ != last)
      save();
    history.push_back(m);
  }
  if (run_steps_ > 0 || stop_at_step >= 0) save();
  return history;
}

double Trainer::evaluate() {
  const int64_t B = config_.train.micro_batch, T = config_.train.seq_len;
  std::vector<int32_t> windows(static_cast<size_t>(B * (T + 1)));
  double loss_sum = 0;
  int64_t count = 0;
  for (int64_t i = 0; i < config_.train.eval_batches; ++i) {
    data_->val_batch(i, B, windows.data());
    const Batch batch = split_windows(windows, B, T);
    const ops::CrossEntropyResult r = model_->forward_loss(batch.tokens, batch.targets);
    loss_sum += r.loss_sum;
    count += r.count;
  }
  return loss_sum / static_cast<double>(count);
}

void Trainer::log(const StepMetrics& m) {
  const double eta = run_steps_ > 0 ? run_seconds_ / static_cast<double>(run_steps_) *
                                          static_cast<double>(config_.train.steps - m.step)
                                    : 0.0;
  char line[320];
  std::snprintf(line, sizeof(line),
                "step %5lld/%lld | loss %.4f | lr %.3e | grad norm %.3f | %.0f tok/s | MFU %.1f%% | "
                "mem %s (peak %s) | ETA %s",
                static_cast<long long>(m.step), static_cast<long long>(config_.train.steps), m.loss,
                m.lr, m.grad_norm, m.tokens_per_second, 100.0 * m.mfu,
                format_bytes(static_cast<double>(m.memory_bytes)).c_str(),
                format_bytes(static_cast<double>(m.peak_bytes)).c_str(),
                format_duration(eta).c_str());
  std::string text = line;
  if (m.val_loss) text += detail::concat(" | val loss ", *m.val_loss);
  MEMENTO_LOG_INFO(text);

  std::snprintf(line, sizeof(line),
                "{\"step\": %lld, \"loss\": %.6f, \"lr\": %.6e, \"grad_norm\": %.6f, "
                "\"tokens_per_s\": %.1f, \"mfu\": %.5f, \"mem_bytes\": %zu, \"peak_bytes\": %zu, "
                "\"gemm_share\": %.4f, \"eta_s\": %.1f",
                static_cast<long long>(m.step), m.loss, m.lr, m.grad_norm, m.tokens_per_second,
                m.mfu, m.memory_bytes, m.peak_bytes, m.gemm_share, eta);
  metrics_file_ << line;
  if (m.val_loss) metrics_file_ << detail::concat(", \"val_loss\": ", *m.val_loss);
  metrics_file_ << "}\n";
  metrics_file_.flush();
}

double Trainer::measure_peak_flops() const {
  // The fp32 GEMM rate this machine sustains: the realistic ceiling for MFU on the CPU.
  constexpr int64_t kN = 512;
  constexpr int kRepeats = 4;
  const Tensor a = Tensor::zeros(Shape{kN, kN}, DType::kF32);
  const Tensor c = Tensor::zeros(Shape{kN, kN}, DType::kF32);
  ops::matmul(a, false, a, true, c);  // warm-up
  const auto start = Clock::now();
  for (int i = 0; i < kRepeats; ++i) ops::matmul(a, false, a, true, c);
  return kRepeats * 2.0 * kN * kN * kN / seconds_since(start);
}

}  // namespace memento
