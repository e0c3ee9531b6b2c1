// The run's state and its records: what checkpoints save and restore, resuming, the metrics
// file and the log line.
#include <unistd.h>

#include <cstdio>
#include <filesystem>

#include "checkpoint/hdf5_checkpoint.h"
#include "core/host_memory.h"
#include "core/log.h"
#include "launch/clock.h"
#include "launch/trainer.h"

namespace memento {
namespace {

namespace fs = std::filesystem;

// The host's physical memory in bytes, 0 when the system does not say.
size_t physical_memory_bytes() {
  const long pages = sysconf(_SC_PHYS_PAGES);
  const long page = sysconf(_SC_PAGE_SIZE);
  return pages > 0 && page > 0 ? static_cast<size_t>(pages) * static_cast<size_t>(page) : 0;
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

// Every owner of state publishes it here: the parameters' flat values and each optimizer state
// (staged through host mirrors on a GPU, read in place on the CPU), the data cursor, the step
// counters, the seed and the run's texts.
void Trainer::publish_state() {
  const ParameterSet& params = model_->params();
  const FlatRange all{0, params.padded_numel()};
  const FlatRange mine = parallel::shard_of(all.end, dp_.size(), dp_.rank());
  staging_state_ = std::make_unique<checkpoint::StateStaging>();
  // Pinned mirrors, so that a save or a resume copies at the link's full speed, unless the node's
  // ranks together would lock more than half of its memory (locked pages cannot be swapped or
  // reclaimed); pageable (slower copies) then, or when the host refuses to lock them.
  size_t state_bytes = params.flat_values().bytes();
  for (const optim::OptimizerState& s : optimizer_->states()) state_bytes += s.values.bytes();
  const size_t node_bytes = physical_memory_bytes();
  const bool pin =
      !device_.is_cpu() &&
      (node_bytes == 0 || state_bytes * static_cast<size_t>(local_ranks_) <= node_bytes / 2);
  if (!device_.is_cpu() && !pin)
    MEMENTO_LOG_INFO("checkpoint staging: ", local_ranks_, " ranks x ",
                     format_bytes(static_cast<double>(state_bytes)), " would lock more than half ",
                     "of the node's ", format_bytes(static_cast<double>(node_bytes)),
                     "; using pageable host memory (slower checkpoint copies)");
  const auto stage = [&](const TensorView& source) {
    if (pin) {
      try {
        return staging_state_->stage(source, pinned_memory_.get());
      } catch (const OutOfMemoryError& e) {
        MEMENTO_LOG_WARN("checkpoint staging: ", e.what(), "; using pageable host memory");
      }
    }
    return staging_state_->stage(source);
  };
  // Saving: each data-parallel rank writes its 1/dp of every buffer, so no byte is written twice.
  // Loading: everything this rank holds, assembled from however many ranks wrote it.
  const TensorView values = stage(params.flat_values());
  add_flat_range(save_state_, "model/", params, values, 0, mine);
  add_flat_range(load_state_, "model/", params, values, 0, all);
  for (const optim::OptimizerState& s : optimizer_->states()) {
    const TensorView host = stage(s.values);
    const std::string prefix = "optim/" + s.name + "/";
    add_flat_range(save_state_, prefix, params, host, s.range.begin, mine);
    add_flat_range(load_state_, prefix, params, host, s.range.begin, s.range);
  }
  if (staging_state_->mirror_bytes() > 0)
    MEMENTO_LOG_INFO("checkpoint staging: host copies of the values and optimizer states, ",
                     format_bytes(static_cast<double>(staging_state_->mirror_bytes())), " (",
                     format_bytes(static_cast<double>(pinned_memory_->current_bytes())),
                     " of it pinned)");
  DataCursor& cursor = data_->cursor_state();
  for (checkpoint::StateRegistry* r : {&save_state_, &load_state_}) {
    r->add_int("state/step", &step_);
    r->add_int("state/optimizer_step", &optimizer_->step_count());
    r->add_int("state/data_epoch", &cursor.epoch);
    r->add_int("state/data_index", &cursor.index);
    r->add_int("state/seed", &seed_);
    r->add_string("meta/config", &resolved_config_);
    r->add_string("meta/tokenizer", &tokenizer_text_);
  }
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
  staging_state_->copy_from_host();
  model_->params().refresh_compute();
  resolved_config_ = config_text;      // the run continues under its own (possibly edited) config
  data_->set_cursor(data_->cursor());  // the loaded cursor, checked against this dataset
  MEMENTO_LOG_INFO("resumed from ", checkpoint_dir, " at step ", step_, " (data epoch ",
                   data_->cursor().epoch, ", sample ", data_->cursor().index, ")",
                   saved_world != dp_.size()
                       ? detail::concat("; saved with ", saved_world, " data-parallel ranks, ",
                                        "resharded to ", dp_.size())
                       : std::string());
}

void Trainer::save() {
  const auto start = Clock::now();
  staging_state_->start_to_host();  // the HDF5 engine writes at once: it waits here
  staging_state_->wait_to_host();
  checkpoint::save_checkpoint(save_state_, config_.checkpoint.dir, step_, dp_.rank(), dp_.size(),
                              [this] { dp_.barrier(); });
  if (dp_.rank() == 0)
    checkpoint::prune_checkpoints(config_.checkpoint.dir,
                                  static_cast<int>(config_.checkpoint.keep));
  MEMENTO_LOG_INFO("checkpoint: step ", step_, " saved to ", config_.checkpoint.dir, " in ",
                   seconds_since(start), " s");
}

void Trainer::log(const StepMetrics& m) {
  interval_.add(m);
  if (!(m.step % config_.train.log_every == 0 || m.val_loss || m.step == last_step_)) return;
  const LogInterval interval = interval_;
  interval_ = {};
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

}  // namespace memento
