// A real trainer process killed with SIGKILL mid-run and restarted with --resume ends with
// parameters and optimizer states bit-identical to an uninterrupted run.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <fstream>
#include <thread>

#include "checkpoint/hdf5_checkpoint.h"
#include "launch/config.h"
#include "launch/e2e_testing.h"
#include "launch/trainer.h"

namespace memento {
namespace {

using testing::scratch_dir;

constexpr int64_t kSteps = 120;

std::string write_config(const std::string& root, const std::string& name) {
  const std::string path = root + "/" + name + ".yaml";
  std::ofstream(path) << "run: {out_dir: " << root << "/" << name << ", seed: 11}\n"
                      << "model: {vocab_size: 256, dim: 64, n_layers: 2, n_heads: 4, "
                         "n_kv_heads: 2, ffn_dim: 128, max_seq_len: 64, "
                         "layer_pattern: [softmax, linear]}\n"
                      << "data: {train: " << root << "/train.bin, val: " << root << "/val.bin}\n"
                      << "train: {seq_len: 64, micro_batch: 4, global_batch: 8, steps: " << kSteps
                      << ", eval_every: 0, log_every: 10, threads: 1}\n"
                      << "optim: {lr: 3.0e-3, min_lr: 3.0e-4, warmup_steps: 5}\n"
                      << "checkpoint: {every: 5, keep: 2}\n";
  return path;
}

pid_t spawn_trainer(const std::vector<std::string>& args) {
  const pid_t pid = fork();
  if (pid == 0) {
    std::vector<char*> argv;
    static const std::string binary = testing::trainer_binary();
    argv.push_back(const_cast<char*>(binary.c_str()));
    for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    const int devnull = ::open("/dev/null", O_WRONLY);
    dup2(devnull, STDOUT_FILENO);
    execv(binary.c_str(), argv.data());
    _exit(127);
  }
  return pid;
}

int wait_exit_code(pid_t pid) {
  int status = 0;
  waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

int64_t latest_step(const std::string& root) {
  const auto dir = checkpoint::find_latest(root);
  return dir ? checkpoint::read_checkpoint_info(*dir).step : 0;
}

bool same_bytes(const TensorView& a, const TensorView& b) {
  return a.bytes() == b.bytes() && std::memcmp(a.raw(), b.raw(), a.bytes()) == 0;
}

TEST(TrainerKillTest, SigkillThenResumeMatchesAnUninterruptedRunBitForBit) {
  const std::string root = scratch_dir("trainer_kill");
  const std::string text = testing::fortunes_text(300000);
  testing::write_byte_tokens(root + "/train.bin", text.substr(0, 270000));
  testing::write_byte_tokens(root + "/val.bin", text.substr(270000));
  const std::string straight = write_config(root, "straight");
  const std::string killed = write_config(root, "killed");

  ASSERT_EQ(wait_exit_code(spawn_trainer({"--config", straight})), 0);

  // Kill the second run once it has published a checkpoint past step 20, well before the end.
  const pid_t pid = spawn_trainer({"--config", killed});
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  while (latest_step(root + "/killed/checkpoints") < 20 &&
         std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  kill(pid, SIGKILL);
  EXPECT_EQ(wait_exit_code(pid), 128 + SIGKILL);
  const int64_t killed_at = latest_step(root + "/killed/checkpoints");
  ASSERT_GE(killed_at, 20);
  ASSERT_LT(killed_at, kSteps) << "the run finished before it could be killed";

  ASSERT_EQ(wait_exit_code(spawn_trainer({"--config", killed, "--resume"})), 0);

  // Each trainer restores its run's final checkpoint; compare every byte of state.
  const Trainer a(load_config(straight), Resume::kLatest);
  const Trainer b(load_config(killed), Resume::kLatest);
  ASSERT_EQ(a.step(), kSteps);
  ASSERT_EQ(b.step(), kSteps);
  EXPECT_TRUE(same_bytes(a.model().params().flat_values(), b.model().params().flat_values()));
  EXPECT_TRUE(same_bytes(a.optimizer().exp_avg(), b.optimizer().exp_avg()));
  EXPECT_TRUE(same_bytes(a.optimizer().exp_avg_sq(), b.optimizer().exp_avg_sq()));
}

}  // namespace
}  // namespace memento
