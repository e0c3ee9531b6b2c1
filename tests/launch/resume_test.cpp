// What --resume does with the checkpoints it finds, as a user runs it: a checkpoint that does not
// verify is named in a warning with why and the newest good one is used; when none verifies the
// run refuses to start over unless told to (--resume=auto-fallback); metrics.jsonl stays one
// series over restarts; a finished run says so; a save clears what killed saves left behind.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>

#include "checkpoint/checkpoint_dir.h"
#include "checkpoint/hdf5_checkpoint.h"
#include "launch/e2e_testing.h"

namespace memento {
namespace {

namespace fs = std::filesystem;
using testing::run_command;
using testing::scratch_dir;
using testing::trainer_binary;

// A 1-layer model that trains `steps` steps with a checkpoint every 2; checkpoints of every step
// are kept.
std::string make_run(const std::string& dir) {
  testing::write_fortunes_corpus(dir);
  const std::string path = dir + "/config.yaml";
  std::ofstream(path) << "run: {out_dir: " << dir << "/run}\n"
                      << "model: {vocab_size: 256, dim: 32, n_layers: 1, n_heads: 4, "
                         "n_kv_heads: 4, ffn_dim: 64, max_seq_len: 32}\n"
                      << "data: {train: " << dir << "/train.bin, val: " << dir << "/val.bin}\n"
                      << "train: {seq_len: 16, micro_batch: 2, global_batch: 4, steps: 4, "
                         "eval_every: 0, threads: 1, peak_tflops: 1}\n"
                      << "optim: {warmup_steps: 1}\n"
                      << "checkpoint: {every: 2, keep: 10}\n";
  return path;
}

// Runs the trainer; stdout and stderr together.
testing::CommandResult train(const std::string& config, const std::string& extra = "") {
  return run_command(trainer_binary() + " --config " + config + " " + extra + " 2>&1");
}

std::string step_dir(const std::string& dir, int64_t step) {
  return dir + "/run/checkpoints/" + checkpoint::step_dir_name(step);
}

// The steps of metrics.jsonl, in file order.
std::vector<int64_t> metric_steps(const std::string& dir) {
  std::ifstream in(dir + "/run/metrics.jsonl");
  std::vector<int64_t> steps;
  for (std::string line; std::getline(in, line);) {
    std::smatch m;
    if (std::regex_search(line, m, std::regex("^\\{\"step\": (\\d+)")))
      steps.push_back(std::stoll(m[1]));
  }
  return steps;
}

bool contains(const std::string& text, const std::string& needle) {
  return text.find(needle) != std::string::npos;
}

TEST(ResumeTest, ACorruptNewestCheckpointIsNamedAndTheOlderOneUsed) {
  const std::string dir = scratch_dir("resume_corrupt_newest");
  const std::string config = make_run(dir);
  ASSERT_EQ(train(config).exit_code, 0);
  fs::resize_file(step_dir(dir, 4) + "/rank_00000.h5", 4096);  // truncated

  const auto r = train(config, "--resume --set train.steps=6");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(contains(r.output, "skipping " + step_dir(dir, 4))) << r.output;
  EXPECT_TRUE(contains(r.output, "rank_00000.h5")) << "the reason names the file: " << r.output;
  EXPECT_TRUE(contains(r.output, "resumed from " + step_dir(dir, 2) + " at step 2")) << r.output;
  EXPECT_TRUE(contains(r.output, "the steps after 2 are trained again")) << r.output;
}

TEST(ResumeTest, WhenNoCheckpointVerifiesTheRunRefusesToStartOver) {
  const std::string dir = scratch_dir("resume_none_verifies");
  const std::string config = make_run(dir);
  ASSERT_EQ(train(config, "--set checkpoint.every=0").exit_code, 0);  // one checkpoint, step 4
  fs::resize_file(step_dir(dir, 4) + "/rank_00000.h5", 4096);

  const auto refused = train(config, "--resume --set train.steps=6");
  EXPECT_EQ(refused.exit_code, 1) << refused.output;
  EXPECT_TRUE(contains(refused.output, "trainer: error: " + dir + "/run/checkpoints: --resume: "))
      << refused.output;
  EXPECT_TRUE(contains(refused.output, "--resume=auto-fallback")) << refused.output;
  EXPECT_FALSE(contains(refused.output, "training steps")) << "must not train: " << refused.output;

  const auto fallback = train(config, "--resume=auto-fallback --set train.steps=6");
  ASSERT_EQ(fallback.exit_code, 0) << fallback.output;
  EXPECT_TRUE(contains(fallback.output, "skipping " + step_dir(dir, 4))) << fallback.output;
  EXPECT_TRUE(contains(fallback.output, "--resume=auto-fallback: none of the 1 checkpoints"))
      << fallback.output;
  EXPECT_TRUE(contains(fallback.output, "training steps 1..6 of 6")) << fallback.output;
}

TEST(ResumeTest, AFirstLaunchWithResumeStartsFromStepZero) {
  const std::string dir = scratch_dir("resume_first_launch");
  const std::string config = make_run(dir);
  const auto r = train(config, "--resume");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(contains(r.output, "no checkpoint under")) << r.output;
  EXPECT_TRUE(contains(r.output, "training steps 1..4 of 4")) << r.output;
}

TEST(ResumeTest, ResumeFlagRejectsAnUnknownMode) {
  const std::string dir = scratch_dir("resume_bad_mode");
  const auto r = train(make_run(dir), "--resume=sometimes");
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_TRUE(contains(r.output, "--resume=sometimes: expected 'auto-fallback'")) << r.output;
}

TEST(ResumeTest, MetricsStayOneSeriesOverARestart) {
  const std::string dir = scratch_dir("resume_metrics");
  const std::string config = make_run(dir);
  ASSERT_EQ(train(config).exit_code, 0);
  ASSERT_EQ(metric_steps(dir), (std::vector<int64_t>{1, 2, 3, 4}));
  // As if the run had been killed after step 4's metrics but before its checkpoint.
  checkpoint::remove_directory_safely(step_dir(dir, 4));
  const auto r = train(config, "--resume");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(metric_steps(dir), (std::vector<int64_t>{1, 2, 3, 4}));
}

TEST(ResumeTest, AFinishedRunResumedSaysItIsFinished) {
  const std::string dir = scratch_dir("resume_finished");
  const std::string config = make_run(dir);
  ASSERT_EQ(train(config).exit_code, 0);
  const auto r = train(config, "--resume");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(contains(r.output, "the run is finished: 4 of 4 steps trained")) << r.output;
  EXPECT_FALSE(contains(r.output, "training steps 5..4")) << r.output;
  EXPECT_EQ(metric_steps(dir), (std::vector<int64_t>{1, 2, 3, 4}));
}

TEST(ResumeTest, ASaveRemovesWhatKilledSavesLeftBehind) {
  const std::string dir = scratch_dir("resume_stale_temporaries");
  const std::string config = make_run(dir);
  const std::string root = dir + "/run/checkpoints";
  fs::create_directories(root + "/.step_000000003.tmp");
  std::ofstream(root + "/.step_000000003.tmp/.rank_00000.h5.tmp") << "half a file";
  std::ofstream(root + "/.latest.tmp.99999") << "step_000000003\n";
  fs::create_directories(root + "/.step_000000001.deleting.4242");
  ASSERT_EQ(train(config, "--set checkpoint.every=0").exit_code, 0);
  std::vector<std::string> left;
  for (const auto& item : fs::directory_iterator(root)) left.push_back(item.path().filename());
  std::sort(left.begin(), left.end());
  EXPECT_EQ(left, (std::vector<std::string>{"latest", "step_000000004"}));
}

}  // namespace
}  // namespace memento
