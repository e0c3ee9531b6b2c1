// `mpirun -np N trainer` as users run it: a checkpoint saved at dp = 2 resumes at dp = 1 and
// dp = 4 with the same next losses; a rank killed with SIGKILL ends the job within 30 s; SIGTERM
// leaves a complete checkpoint and the documented exit code.
#include <gtest/gtest.h>
#include <signal.h>

#include <chrono>
#include <regex>
#include <thread>

#include "checkpoint/hdf5_checkpoint.h"
#include "launch/e2e_testing.h"
#include "launch/signals.h"

namespace memento {
namespace {

using namespace std::chrono_literals;
using testing::scratch_dir;

std::string write_setup(const std::string& root, int64_t steps, int64_t every = 4) {
  const std::string text = testing::fortunes_text(150000);
  testing::write_byte_tokens(root + "/train.bin", text.substr(0, 140000));
  testing::write_byte_tokens(root + "/val.bin", text.substr(140000));
  const std::string config = root + "/config.yaml";
  std::ofstream(config) << "model: {vocab_size: 256, dim: 32, n_layers: 2, n_heads: 4, "
                           "n_kv_heads: 2, ffn_dim: 64, max_seq_len: 32, "
                           "layer_pattern: [softmax, linear]}\n"
                        << "data: {train: " << root << "/train.bin, val: " << root << "/val.bin}\n"
                        << "train: {seq_len: 16, micro_batch: 1, global_batch: 8, steps: " << steps
                        << ", eval_every: 0, threads: 1}\n"
                        << "optim: {lr: 1.0e-2, min_lr: 1.0e-3, warmup_steps: 2}\n"
                        << "checkpoint: {every: " << every << ", keep: 10}\n";
  return config;
}

std::vector<std::string> trainer_args(int np, const std::string& config, const std::string& out,
                                      std::vector<std::string> extra = {}) {
  std::vector<std::string> args = np > 1 ? testing::mpirun(np) : std::vector<std::string>{};
  for (const auto& a :
       {testing::trainer_binary(), std::string("--config"), config, std::string("--set"),
        "run.out_dir=" + out, std::string("--set"), "parallel.dp=" + std::to_string(np)})
    args.push_back(a);
  args.insert(args.end(), extra.begin(), extra.end());
  return args;
}

// step -> loss from a run's metrics.jsonl.
std::map<int64_t, double> losses(const std::string& out) {
  std::map<int64_t, double> result;
  const std::string text = testing::read_file(out + "/metrics.jsonl");
  const std::regex line("\\{\"step\": (\\d+), \"loss\": ([0-9.e+-]+)");
  for (auto it = std::sregex_iterator(text.begin(), text.end(), line); it != std::sregex_iterator();
       ++it)
    result[std::stoll((*it)[1])] = std::stod((*it)[2]);
  return result;
}

TEST(DistributedCliTest, SavedAtDp2ResumesAtDp1AndDp4WithTheSameLosses) {
  const std::string root = scratch_dir("dist_reshard");
  const std::string config = write_setup(root, 8);
  ASSERT_EQ(testing::wait_exit_code(
                testing::spawn(trainer_args(2, config, root + "/dp2"), root + "/dp2.log")),
            0)
      << testing::read_file(root + "/dp2.log");
  const auto reference = losses(root + "/dp2");
  ASSERT_EQ(reference.size(), 8u);

  for (int dp : {1, 4}) {
    const std::string out = root + "/dp" + std::to_string(dp) + "-resumed";
    std::filesystem::create_directories(out + "/checkpoints");
    std::filesystem::copy(root + "/dp2/checkpoints/step_000000004",
                          out + "/checkpoints/step_000000004",
                          std::filesystem::copy_options::recursive);
    const std::string log = out + ".log";
    ASSERT_EQ(
        testing::wait_exit_code(testing::spawn(trainer_args(dp, config, out, {"--resume"}), log)),
        0)
        << testing::read_file(log);
    EXPECT_NE(testing::read_file(log).find("resharded to " + std::to_string(dp)), std::string::npos)
        << "the log says the checkpoint was resharded";
    const auto resumed = losses(out);
    for (int64_t step = 5; step <= 8; ++step) {
      ASSERT_TRUE(resumed.contains(step)) << "dp " << dp << " step " << step;
      EXPECT_NEAR(resumed.at(step), reference.at(step), 1e-5 * reference.at(step))
          << "dp " << dp << " step " << step;
    }
  }
}

// Waits until the run's metrics file has a line (the job is training), up to a minute.
bool wait_for_training(const std::string& out) {
  for (int i = 0; i < 600; ++i) {
    if (!testing::read_file(out + "/metrics.jsonl").empty()) return true;
    std::this_thread::sleep_for(100ms);
  }
  return false;
}

// True while `pid` exists and is not a zombie.
bool running(pid_t pid) {
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string pid_field, comm, state;
  if (!(stat >> pid_field >> comm >> state)) return false;
  return state != "Z";
}

TEST(DistributedCliTest, SigkillOfOneRankEndsTheJobWithin30Seconds) {
  const std::string root = scratch_dir("dist_sigkill");
  const std::string config = write_setup(root, 100000);
  const pid_t job = testing::spawn(trainer_args(2, config, root + "/run"), root + "/run.log");
  ASSERT_TRUE(wait_for_training(root + "/run")) << testing::read_file(root + "/run.log");
  const std::vector<pid_t> ranks = testing::children_of(job);
  ASSERT_EQ(ranks.size(), 2u);
  const auto start = std::chrono::steady_clock::now();
  kill(ranks[1], SIGKILL);
  const int code = testing::wait_exit_code(job);
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_NE(code, 0);
  EXPECT_LT(seconds, 30.0);
  std::this_thread::sleep_for(200ms);  // let init reap the orphaned ranks
  for (pid_t p : ranks) EXPECT_FALSE(running(p)) << "rank process " << p << " is still alive";
}

TEST(DistributedCliTest, SigtermSavesACompleteCheckpointAndExitsWithThePreemptedCode) {
  const std::string root = scratch_dir("dist_sigterm");
  const std::string config = write_setup(root, 100000);
  const pid_t job = testing::spawn(trainer_args(2, config, root + "/run"), root + "/run.log");
  ASSERT_TRUE(wait_for_training(root + "/run")) << testing::read_file(root + "/run.log");
  // As Slurm does on preemption (scancel --signal=TERM): every task gets SIGTERM.
  for (pid_t p : testing::children_of(job)) kill(p, SIGTERM);
  EXPECT_EQ(testing::wait_exit_code(job), kExitPreempted) << testing::read_file(root + "/run.log");
  const auto latest = checkpoint::find_latest(root + "/run/checkpoints");
  ASSERT_TRUE(latest.has_value());
  const auto info = checkpoint::read_checkpoint_info(*latest);
  EXPECT_EQ(info.world, 2);
  EXPECT_GT(info.step, 0);
  EXPECT_LT(info.step, 100000);
}

TEST(DistributedCliTest, Sigusr1SavesACheckpointAndTrainingContinues) {
  const std::string root = scratch_dir("dist_sigusr1");
  const std::string config = write_setup(root, 100000, /*every=*/0);  // no periodic checkpoints
  const pid_t job = testing::spawn(trainer_args(2, config, root + "/run"), root + "/run.log");
  ASSERT_TRUE(wait_for_training(root + "/run")) << testing::read_file(root + "/run.log");
  const std::vector<pid_t> ranks = testing::children_of(job);
  for (pid_t p : ranks) kill(p, SIGUSR1);
  std::optional<std::string> saved;
  for (int i = 0; i < 300 && !saved; ++i) {
    std::this_thread::sleep_for(100ms);
    saved = checkpoint::find_latest(root + "/run/checkpoints");
  }
  ASSERT_TRUE(saved.has_value()) << "SIGUSR1 produced no checkpoint";
  const int64_t saved_step = checkpoint::read_checkpoint_info(*saved).step;
  // Training goes on past the saved step.
  bool continued = false;
  for (int i = 0; i < 300 && !continued; ++i) {
    std::this_thread::sleep_for(100ms);
    continued = kill(job, 0) == 0 && losses(root + "/run").rbegin()->first > saved_step + 2;
  }
  EXPECT_TRUE(continued) << "the job did not keep training after SIGUSR1";
  for (pid_t p : ranks) kill(p, SIGTERM);
  EXPECT_EQ(testing::wait_exit_code(job), kExitPreempted);
}

}  // namespace
}  // namespace memento
