// What the trainer's log and metrics.jsonl tell a user: the build and host it runs, interval
// means over log_every steps (not the last step's figures), a warning when the MFU peak cannot be
// right, resident memory, the signal that stopped it, and OpenMP threads that do not spin.
#include <gtest/gtest.h>
#include <signal.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <regex>
#include <thread>

#include "launch/config.h"
#include "launch/e2e_testing.h"
#include "launch/trainer.h"

namespace memento {
namespace {

namespace fs = std::filesystem;
using testing::run_command;
using testing::scratch_dir;
using testing::trainer_binary;

std::string make_run(const std::string& dir, int64_t steps, const std::string& train_extra = "") {
  testing::write_fortunes_corpus(dir);
  const std::string path = dir + "/config.yaml";
  std::ofstream(path) << "run: {out_dir: " << dir << "/run}\n"
                      << "model: {vocab_size: 256, dim: 32, n_layers: 1, n_heads: 4, "
                         "n_kv_heads: 4, ffn_dim: 64, max_seq_len: 32}\n"
                      << "data: {train: " << dir << "/train.bin, val: " << dir << "/val.bin}\n"
                      << "train: {seq_len: 16, micro_batch: 2, global_batch: 4, steps: " << steps
                      << ", eval_every: 0, threads: 1" << train_extra << "}\n"
                      << "optim: {warmup_steps: 1}\n"
                      << "checkpoint: {at_end: false}\n";
  return path;
}

// The number after "key": in a JSON line.
double json_number(const std::string& line, const std::string& key) {
  std::smatch m;
  EXPECT_TRUE(std::regex_search(line, m, std::regex("\"" + key + "\": ([-0-9.e+]+)")))
      << key << ": " << line;
  return m.size() > 1 ? std::stod(m[1]) : 0.0;
}

std::vector<std::string> lines_of(const std::string& path) {
  std::ifstream in(path);
  std::vector<std::string> lines;
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

TEST(TrainerLogTest, MetricLinesReportMeansOverTheInterval) {
  const std::string dir = scratch_dir("log_interval");
  Config config = load_config(make_run(dir, 6), {"train.log_every=3"});
  Trainer trainer(config, Resume::kNo);
  const std::vector<StepMetrics> steps = trainer.run();
  ASSERT_EQ(steps.size(), 6u);
  const auto lines = lines_of(dir + "/run/metrics.jsonl");
  ASSERT_EQ(lines.size(), 2u);
  for (size_t k = 0; k < 2; ++k) {
    double loss = 0, tokens = 0, seconds = 0;
    for (size_t i = 3 * k; i < 3 * k + 3; ++i) {
      loss += steps[i].loss / 3;
      tokens += steps[i].tokens;
      seconds += steps[i].seconds;
    }
    EXPECT_EQ(json_number(lines[k], "step"), static_cast<double>(3 * k + 3));
    EXPECT_EQ(json_number(lines[k], "interval_steps"), 3);
    EXPECT_NEAR(json_number(lines[k], "loss"), loss, 1e-6) << lines[k];
    EXPECT_NEAR(json_number(lines[k], "tokens_per_s"), tokens / seconds,
                0.1 + 1e-6 * tokens / seconds)
        << lines[k];
    // The last step's own rate is not what the line reports (unless all three took equally long).
    EXPECT_NEAR(json_number(lines[k], "interval_s"), seconds, 1e-4) << lines[k];
  }
}

TEST(TrainerLogTest, MetricsCarryResidentMemory) {
  const std::string dir = scratch_dir("log_rss");
  const auto r = run_command(trainer_binary() + " --config " + make_run(dir, 2) + " 2>&1");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const auto lines = lines_of(dir + "/run/metrics.jsonl");
  ASSERT_FALSE(lines.empty());
  const double rss = json_number(lines.back(), "rss_bytes");
  const double anon = json_number(lines.back(), "rss_anon_bytes");
  EXPECT_GT(rss, 1e6) << lines.back();
  EXPECT_GT(anon, 0) << lines.back();
  EXPECT_LE(anon, rss) << lines.back();
  EXPECT_TRUE(std::regex_search(r.output, std::regex("\\| rss [0-9.]+ [KMG]iB \\|"))) << r.output;
}

TEST(TrainerLogTest, AnMfuAbove100PercentIsWarnedAboutNamingThePeakKey) {
  const std::string dir = scratch_dir("log_mfu");
  const auto r = run_command(trainer_binary() + " --config " +
                             make_run(dir, 2, ", peak_tflops: 1.0e-9") + " 2>&1 >/dev/null");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("is above 100%"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("train.peak_tflops"), std::string::npos) << r.output;
  EXPECT_EQ(r.output.find("is above 100%"), r.output.rfind("is above 100%")) << "warned once";
}

TEST(TrainerLogTest, TheLogNamesTheBuildTheHostAndTheWaitPolicy) {
  const std::string dir = scratch_dir("log_build");
  const auto r = run_command("env -u OMP_WAIT_POLICY " + trainer_binary() + " --config " +
                             make_run(dir, 1) + " 2>&1");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  char host[256] = {};
  gethostname(host, sizeof(host) - 1);
  EXPECT_NE(r.output.find(std::string(" on host ") + host), std::string::npos) << r.output;
  EXPECT_TRUE(std::regex_search(r.output, std::regex("memento [0-9.]+ \\(commit [0-9a-f]")))
      << r.output;
  EXPECT_NE(r.output.find("OMP_WAIT_POLICY=passive, the default"), std::string::npos) << r.output;
  const auto active = run_command("OMP_WAIT_POLICY=active " + trainer_binary() + " --config " +
                                  make_run(dir, 1) + " 2>&1");
  EXPECT_NE(active.output.find("OpenMP wait policy active (OMP_WAIT_POLICY)"), std::string::npos)
      << "a policy the user set is kept: " << active.output;
}

// The environment the trainer's OpenMP runtime started with (the kernel's copy, which only an
// exec sets: a setenv after start-up does not show there and comes too late for libgomp).
std::string environment_of(pid_t pid) {
  std::string env = testing::read_file("/proc/" + std::to_string(pid) + "/environ");
  std::replace(env.begin(), env.end(), '\0', '\n');
  return env;
}

// Waits until `path` has at least one line (the first step's metrics), at most 60 s.
bool wait_for_metrics(const std::string& path, pid_t pid) {
  for (int i = 0; i < 600; ++i) {
    if (!lines_of(path).empty()) return true;
    if (waitpid(pid, nullptr, WNOHANG) == pid) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return false;
}

TEST(TrainerLogTest, OpenMpWaitsPassivelyUnlessTheUserSaysOtherwise) {
  const std::string dir = scratch_dir("log_omp");
  const std::string config = make_run(dir, 100000);
  unsetenv("OMP_WAIT_POLICY");  // ctest sets it for the tests; a user's shell does not
  const pid_t pid = testing::spawn({trainer_binary(), "--config", config}, dir + "/log.txt");
  ASSERT_TRUE(wait_for_metrics(dir + "/run/metrics.jsonl", pid))
      << testing::read_file(dir + "/log.txt");
  const std::string env = environment_of(pid);
  kill(pid, SIGKILL);
  testing::wait_exit_code(pid);
  EXPECT_NE(env.find("\nOMP_WAIT_POLICY=passive\n"), std::string::npos) << env;
}

TEST(TrainerLogTest, SigintIsLoggedAsSigint) {
  const std::string dir = scratch_dir("log_sigint");
  const std::string config = make_run(dir, 100000);
  const pid_t pid = testing::spawn({trainer_binary(), "--config", config}, dir + "/log.txt");
  ASSERT_TRUE(wait_for_metrics(dir + "/run/metrics.jsonl", pid))
      << testing::read_file(dir + "/log.txt");
  kill(pid, SIGINT);
  EXPECT_EQ(testing::wait_exit_code(pid), 75);
  const std::string log = testing::read_file(dir + "/log.txt");
  EXPECT_NE(log.find("stop requested (SIGINT)"), std::string::npos) << log;
  EXPECT_EQ(log.find("SIGTERM"), std::string::npos) << log;
}

}  // namespace
}  // namespace memento
