// The memory a real trainer process holds, as the kernel counts it (RssAnon in /proc/<pid>/status,
// sampled while it trains and evaluates every few steps): flat after the warm-up, within a stated
// bound of the tracked peak plus the libraries' fixed share, and taken from the kernel once rather
// than handed back and faulted in again every step.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <iterator>
#include <sstream>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "launch/e2e_testing.h"

namespace memento {
namespace {

using testing::scratch_dir;

constexpr double kMiB = 1024.0 * 1024.0;

struct Sample {
  int64_t step;     // the last step metrics.jsonl has flushed
  size_t anon;      // RssAnon
  uint64_t minflt;  // minor page faults so far (pages the kernel had to hand out)
};

struct TrainerRun {
  int exit_code = -1;
  std::vector<Sample> samples;
  size_t peak_bytes = 0;  // the largest tracked step peak in metrics.jsonl
};

size_t rss_anon(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  for (std::string line; std::getline(in, line);)
    if (line.rfind("RssAnon:", 0) == 0) return std::stoull(line.substr(8)) * 1024;
  return 0;
}

uint64_t minor_faults(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string stat((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const size_t close = stat.rfind(')');  // the command name may hold spaces
  if (close == std::string::npos) return 0;
  std::istringstream fields(stat.substr(close + 2));
  std::string field;
  for (int i = 3; i <= 10 && fields >> field; ++i) {  // field 10 is minflt
    if (i == 10) return std::stoull(field);
  }
  return 0;
}

// The step and a numeric field of each complete line of metrics.jsonl.
std::vector<std::pair<int64_t, double>> metric(const std::string& path, const std::string& key) {
  std::vector<std::pair<int64_t, double>> values;
  std::ifstream in(path);
  for (std::string line; std::getline(in, line);) {
    if (line.empty() || line.back() != '}') continue;  // being written
    long long step = 0;
    if (std::sscanf(line.c_str(), "{\"step\": %lld", &step) != 1) continue;
    const size_t at = line.find("\"" + key + "\": ");
    values.emplace_back(
        step, at == std::string::npos ? 0.0 : std::stod(line.substr(at + key.size() + 4)));
  }
  return values;
}

std::string write_config(const std::string& root, const std::string& name, const std::string& model,
                         const std::string& train) {
  const std::string path = root + "/" + name + ".yaml";
  std::ofstream(path) << "run: {out_dir: " << root << "/" << name << ", seed: 5}\n"
                      << "model: {vocab_size: 256, " << model << "}\n"
                      << "data: {train: " << root << "/train.bin, val: " << root << "/val.bin}\n"
                      << "train: {" << train << ", log_every: 5, peak_tflops: 1}\n"
                      << "optim: {lr: 2.0e-3, min_lr: 2.0e-4, warmup_steps: 10}\n"
                      << "checkpoint: {every: 0, at_end: false}\n";
  return path;
}

// The last step of the complete lines metrics.jsonl has gained since the previous call.
class StepFollower {
 public:
  explicit StepFollower(std::string path) : path_(std::move(path)) {}
  int64_t step() {
    std::ifstream in(path_, std::ios::binary);
    in.seekg(static_cast<std::streamoff>(offset_));
    std::string chunk((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    for (size_t end; (end = chunk.find('\n')) != std::string::npos;) {
      long long step = 0;
      if (std::sscanf(chunk.c_str(), "{\"step\": %lld", &step) == 1) step_ = step;
      offset_ += end + 1;
      chunk.erase(0, end + 1);
    }
    return step_;
  }

 private:
  std::string path_;
  size_t offset_ = 0;
  int64_t step_ = 0;
};

// Starts the trainer and samples it every 10 ms until it exits.
TrainerRun run_trainer(const std::string& config, const std::string& out_dir) {
  const std::string binary = testing::trainer_binary();
  const pid_t pid = testing::spawn({binary, "--config", config}, out_dir + ".log");
  const std::string metrics = out_dir + "/metrics.jsonl";
  StepFollower follower(metrics);
  TrainerRun run;
  for (;;) {
    int status = 0;
    if (waitpid(pid, &status, WNOHANG) == pid) {
      run.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
      break;
    }
    const int64_t step = follower.step();
    const size_t anon = rss_anon(pid);
    if (anon > 0) run.samples.push_back({step, anon, minor_faults(pid)});
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  for (const auto& [s, peak] : metric(metrics, "peak_bytes"))
    run.peak_bytes = std::max(run.peak_bytes, static_cast<size_t>(peak));
  return run;
}

size_t max_anon(const TrainerRun& run, int64_t from_step, int64_t to_step) {
  size_t m = 0;
  for (const Sample& s : run.samples)
    if (s.step >= from_step && s.step < to_step) m = std::max(m, s.anon);
  return m;
}

TEST(ResidentMemory, TrainerHoldsFlatMemoryNearItsTrackedPeak) {
  const std::string root = scratch_dir("resident_memory");
  const std::string text = testing::fortunes_text(400000);
  testing::write_byte_tokens(root + "/train.bin", text.substr(0, 360000));
  testing::write_byte_tokens(root + "/val.bin", text.substr(360000));

  // The libraries' share (OpenMP, OpenBLAS, MPI and HDF5 state, thread stacks, heap of the config
  // and data index): the same binary training a model of a few kilobytes.
  const TrainerRun reference = run_trainer(
      write_config(root, "reference",
                   "dim: 16, n_layers: 1, n_heads: 2, n_kv_heads: 1, ffn_dim: 32, max_seq_len: 16",
                   "seq_len: 16, micro_batch: 2, global_batch: 2, steps: 300, eval_every: 5, "
                   "eval_batches: 1, threads: 2"),
      root + "/reference");
  ASSERT_EQ(reference.exit_code, 0) << testing::read_file(root + "/reference.log");
  const size_t reference_anon = max_anon(reference, 50, INT64_MAX);
  ASSERT_GT(reference_anon, 0u) << "no sample of the reference run after step 50";
  const size_t libraries = reference_anon - std::min(reference_anon, reference.peak_bytes);

  // Softmax and linear attention (both with per-thread tiles), evaluation every 5 steps.
  constexpr int64_t kSteps = 160;
  const TrainerRun run = run_trainer(
      write_config(root, "train",
                   "dim: 128, n_layers: 2, n_heads: 4, n_kv_heads: 2, ffn_dim: 384, "
                   "max_seq_len: 128, layer_pattern: [linear, softmax]",
                   "seq_len: 128, micro_batch: 4, global_batch: 8, steps: " +
                       std::to_string(kSteps) + ", eval_every: 5, eval_batches: 2, threads: 2"),
      root + "/train");
  ASSERT_EQ(run.exit_code, 0) << testing::read_file(root + "/train.log");
  ASSERT_GT(run.peak_bytes, 0u);

  const int64_t warm = kSteps / 5;  // steps before this one are the warm-up
  const size_t early = max_anon(run, warm, 2 * warm);
  const size_t late = max_anon(run, kSteps * 3 / 4, INT64_MAX);
  const size_t after_warmup = max_anon(run, warm, INT64_MAX);
  ASSERT_GT(early, 0u) << "no sample between steps " << warm << " and " << 2 * warm;
  ASSERT_GT(late, 0u) << "no sample in the last quarter of the run";
  char figures[256];
  std::snprintf(figures, sizeof(figures),
                "RssAnon steps %lld..%lld: %.2f MiB, last quarter: %.2f MiB, after the warm-up: "
                "%.2f MiB; tracked peak %.2f MiB; libraries %.2f MiB",
                static_cast<long long>(warm), static_cast<long long>(2 * warm), early / kMiB,
                late / kMiB, after_warmup / kMiB, run.peak_bytes / kMiB, libraries / kMiB);

  std::printf("%s\n", figures);

  // Flat: what the last quarter holds is what steps 32..64 held (the old heap grew ~30 MiB here).
  EXPECT_LE(late, early + (2 << 20)) << figures;
  // Accounted for: tensors (tracked peak, plus up to 1/8 in freed blocks kept for reuse and
  // page rounding) + the libraries' share + 4 MiB (OpenBLAS's buffers grow with the GEMMs, by
  // about 1 MiB from the reference's sizes to these; the small-block heap).
  EXPECT_LE(after_warmup, libraries + run.peak_bytes + run.peak_bytes / 8 + (4 << 20)) << figures;

  // Taken once: after the warm-up a step gets (almost) no fresh pages from the kernel. Memory
  // handed back and faulted in again each step costs ~600 faults a step here before the fix.
  const auto first = std::find_if(run.samples.begin(), run.samples.end(),
                                  [&](const Sample& s) { return s.step >= warm; });
  ASSERT_NE(first, run.samples.end());
  const Sample& last = run.samples.back();
  ASSERT_GT(last.step, first->step);
  const double faults_per_step = static_cast<double>(last.minflt - first->minflt) /
                                 static_cast<double>(last.step - first->step);
  EXPECT_LT(faults_per_step, 20.0) << figures;
}

}  // namespace
}  // namespace memento
