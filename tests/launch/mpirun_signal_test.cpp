// scripts/launch.sh, the one-node launcher, as users run it: SIGTERM to it mid-run (or Ctrl-C,
// SIGINT to the terminal's foreground process group, also with the output piped into tee) leaves
// a complete checkpoint of the stop step and exit code 75, and --resume continues from it; a
// second signal, or MEMENTO_STOP_TIMEOUT_S, ends a job that does not stop, within the bound the
// script states. Plain mpirun fails the first test: it kills the ranks 2 s after the signal, in
// their save (partial .tmp files, exit 1). And the trainer records which signal asked it to stop.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <initializer_list>
#include <regex>
#include <sstream>
#include <thread>

#include "checkpoint/checkpoint_dir.h"
#include "checkpoint/hdf5_checkpoint.h"
#include "launch/e2e_testing.h"
#include "launch/signals.h"

namespace memento {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using testing::scratch_dir;

const std::string kLauncher = std::string(MEMENTO_SOURCE_DIR) + "/scripts/launch.sh";

// Byte-level data and a model of width `dim`. At 512, 31.7M parameters: a step takes ~0.5 s on two
// busy cores and a checkpoint (380 MB of values and AdamW states) ~2 s, past Open MPI's 2 s kill.
std::string write_setup(const std::string& root, int dim) {
  const std::string text = testing::fortunes_text(150000);
  testing::write_byte_tokens(root + "/train.bin", text.substr(0, 140000));
  testing::write_byte_tokens(root + "/val.bin", text.substr(140000));
  const std::string config = root + "/config.yaml";
  std::ofstream(config) << "run: {out_dir: " << root << "/run}\n"
                        << "model: {vocab_size: 256, dim: " << dim << ", n_layers: 8, n_heads: 8, "
                        << "n_kv_heads: 4, ffn_dim: " << 4 * dim << ", max_seq_len: 16, "
                        << "layer_pattern: [softmax, linear]}\n"
                        << "data: {train: " << root << "/train.bin, val: " << root << "/val.bin}\n"
                        << "train: {seq_len: 16, micro_batch: 1, global_batch: 2, steps: 100000, "
                           "eval_every: 0, log_every: 1, threads: 1}\n"
                        << "optim: {lr: 1.0e-3, min_lr: 1.0e-4, warmup_steps: 2}\n"
                        << "checkpoint: {every: 0, keep: 2}\n";
  return config;
}

// `bash scripts/launch.sh <mpirun options> -np 2 PROGRAM...`, with the mpirun the build found.
std::vector<std::string> launch(const std::vector<std::string>& program) {
  setenv("MEMENTO_MPIRUN", MEMENTO_MPIEXEC, 1);
  std::vector<std::string> args = testing::mpirun(2);
  args[0] = kLauncher;
  args.insert(args.begin(), "bash");
  args.insert(args.end(), program.begin(), program.end());
  return args;
}

std::vector<std::string> trainer(const std::string& config, std::vector<std::string> extra = {}) {
  std::vector<std::string> args = {testing::trainer_binary(), "--config", config, "--set",
                                   "parallel.dp=2"};
  args.insert(args.end(), extra.begin(), extra.end());
  return args;
}

std::string command_name(pid_t pid) {
  std::string name = testing::read_file("/proc/" + std::to_string(pid) + "/comm");
  while (!name.empty() && name.back() == '\n') name.pop_back();
  return name;
}

// mpirun: the launcher's child that is not one of its output relays (bash, cat), or -1.
pid_t mpirun_of(pid_t launcher) {
  for (int i = 0; i < 100; ++i) {
    for (pid_t child : testing::children_of(launcher))
      if (command_name(child) != "bash" && command_name(child) != "cat") return child;
    std::this_thread::sleep_for(100ms);
  }
  return -1;
}

// The two rank processes: children of mpirun.
std::vector<pid_t> ranks_of(pid_t launcher) {
  const pid_t mpirun = mpirun_of(launcher);
  for (int i = 0; i < 100 && mpirun > 0; ++i) {
    const auto ranks = testing::children_of(mpirun);
    if (ranks.size() == 2) return ranks;
    std::this_thread::sleep_for(100ms);
  }
  return {};
}

// True while `pid` exists and is not a zombie.
bool running(pid_t pid) {
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string pid_field, comm, state;
  if (!(stat >> pid_field >> comm >> state)) return false;
  return state != "Z";
}

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

// Waits until the run's metrics file has a line (the job is training), up to two minutes, or
// until `job` has ended.
bool wait_for_training(const std::string& out, pid_t job) {
  for (int i = 0; i < 1200 && running(job); ++i) {
    if (!testing::read_file(out + "/metrics.jsonl").empty()) return true;
    std::this_thread::sleep_for(100ms);
  }
  return false;
}

// Hidden temporaries that a save killed midway leaves (.step_*.tmp/.rank_*.h5.tmp, ...).
std::vector<std::string> temporaries(const std::string& root) {
  std::vector<std::string> found;
  if (!fs::exists(root)) return found;
  for (const auto& e : fs::recursive_directory_iterator(root))
    if (e.path().filename().string().find(".tmp") != std::string::npos)
      found.push_back(e.path().string() + " (" +
                      std::to_string(e.is_regular_file() ? e.file_size() : 0) + " bytes)");
  return found;
}

// The last step in the run's metrics.jsonl (one record per step), or -1.
int64_t last_metrics_step(const std::string& out) {
  const std::string text = testing::read_file(out + "/metrics.jsonl");
  int64_t last = -1;
  const std::regex record("\\{\"step\": (\\d+),");
  for (auto it = std::sregex_iterator(text.begin(), text.end(), record);
       it != std::sregex_iterator(); ++it)
    last = std::stoll((*it)[1]);
  return last;
}

// Stops `job` with `stop` once it trains; expects exit 75 and a complete checkpoint, of the last
// step trained, that find_latest returns; `log_kept`: the log shows the stop (not when its
// writer was ended too). Returns the step.
int64_t stop_and_check(const std::string& root, pid_t job, const std::string& log,
                       const std::function<void()>& stop, bool log_kept = true) {
  const std::string ckpt = root + "/run/checkpoints";
  if (!wait_for_training(root + "/run", job)) {
    ADD_FAILURE() << "the job did not start training\n" << testing::read_file(log);
    // Twice: the launcher then kills the job (a SIGKILL to it would leave mpirun running).
    kill(job, SIGTERM);
    std::this_thread::sleep_for(200ms);
    kill(job, SIGTERM);
    testing::wait_exit_code(job);
    return -1;
  }
  std::this_thread::sleep_for(1s);  // a step or two in
  stop();
  const auto start = std::chrono::steady_clock::now();
  const int code = testing::wait_exit_code(job);
  const std::string text = testing::read_file(log);
  EXPECT_EQ(code, kExitPreempted) << text;
  EXPECT_LT(seconds_since(start), 60.0) << "a step and a save take a few seconds";
  const int64_t step = last_metrics_step(root + "/run");
  if (log_kept) {
    EXPECT_NE(text.find("saving a checkpoint at step " + std::to_string(step)), std::string::npos)
        << text;
  }
  const auto latest = checkpoint::find_latest(ckpt);
  EXPECT_TRUE(latest.has_value()) << "no complete checkpoint in " << ckpt << "\n" << text;
  EXPECT_TRUE(temporaries(ckpt).empty())
      << "left by a save that was killed: " << ::testing::PrintToString(temporaries(ckpt));
  if (!latest) return -1;
  const auto info = checkpoint::read_checkpoint_info(*latest);
  EXPECT_EQ(info.step, step) << "the checkpoint is of the step the stop was served at";
  EXPECT_EQ(info.world, 2);
  return info.step;
}

TEST(MpirunSignalTest, SigtermToTheLauncherSavesTheStopStepExits75AndResumes) {
  const std::string root = scratch_dir("mpirun_sigterm");
  const std::string config = write_setup(root, 512);
  const std::string log = root + "/run.log";
  const pid_t job = testing::spawn(launch(trainer(config)), log);
  const int64_t step = stop_and_check(root, job, log, [&] { kill(job, SIGTERM); });
  ASSERT_GT(step, 0);

  const std::string resumed_log = root + "/resumed.log";
  const std::string steps = "train.steps=" + std::to_string(step + 2);
  const pid_t resumed = testing::spawn(
      launch(trainer(config, {"--resume", "--set", steps, "--set", "checkpoint.at_end=false"})),
      resumed_log);
  ASSERT_EQ(testing::wait_exit_code(resumed), 0) << testing::read_file(resumed_log);
  const std::string text = testing::read_file(resumed_log);
  EXPECT_NE(text.find("resumed from " + root + "/run/checkpoints/" +
                      checkpoint::step_dir_name(step) + " at step " + std::to_string(step)),
            std::string::npos)
      << text;
  const std::string metrics = testing::read_file(root + "/run/metrics.jsonl");
  EXPECT_NE(metrics.find("{\"step\": " + std::to_string(step + 2) + ","), std::string::npos)
      << metrics;
}

TEST(MpirunSignalTest, CtrlCSignalsTheForegroundGroupAndSavesLikeSigterm) {
  const std::string root = scratch_dir("mpirun_sigint");
  const std::string config = write_setup(root, 64);  // the save's length is not the point here
  const std::string log = root + "/run.log";
  const pid_t job = testing::spawn(launch(trainer(config)), log, /*own_group=*/true);
  EXPECT_GT(stop_and_check(root, job, log, [&] { kill(-job, SIGINT); }), 0);
}

// `scripts/launch.sh ... 2>&1 | tee log` in an interactive shell: Ctrl-C ends tee as well, and
// the job's output has nowhere to go while it saves.
TEST(MpirunSignalTest, CtrlCToALauncherPipedIntoTeeStillSaves) {
  const std::string root = scratch_dir("mpirun_tee");
  const std::string config = write_setup(root, 64);
  const std::string log = root + "/run.log";
  std::vector<std::string> args = {
      "bash", "-c",
      "trap : INT; \"$@\" 2>&1 | tee -a " + log + " >/dev/null; exit ${PIPESTATUS[0]}", "pipeline"};
  for (const auto& a : launch(trainer(config))) args.push_back(a);
  const pid_t job = testing::spawn(args, root + "/shell.log", /*own_group=*/true);
  EXPECT_GT(stop_and_check(
                root, job, log, [&] { kill(-job, SIGINT); }, /*log_kept=*/false),
            0)
      << testing::read_file(root + "/shell.log");
}

// Ranks that catch every signal and never exit (as if hung in a collective).
const std::vector<std::string> kStuckRanks = {"bash", "-c",
                                              "trap : USR2 TERM INT; while :; do sleep 0.2; done"};

TEST(MpirunSignalTest, TheStopTimeoutKillsAJobThatDoesNotStop) {
  const std::string root = scratch_dir("mpirun_deadline");
  const std::string log = root + "/run.log";
  setenv("MEMENTO_STOP_TIMEOUT_S", "3", 1);
  const pid_t job = testing::spawn(launch(kStuckRanks), log);
  unsetenv("MEMENTO_STOP_TIMEOUT_S");
  const std::vector<pid_t> ranks = ranks_of(job);
  ASSERT_EQ(ranks.size(), 2u) << testing::read_file(log);
  std::this_thread::sleep_for(500ms);  // their traps are set
  const auto start = std::chrono::steady_clock::now();
  kill(job, SIGTERM);
  const int code = testing::wait_exit_code(job);
  const double seconds = seconds_since(start);
  const std::string text = testing::read_file(log);
  EXPECT_EQ(code, 1) << "Open MPI's code for a job it killed\n" << text;
  EXPECT_GE(seconds, 2.0) << "not killed before the timeout";
  EXPECT_LT(seconds, 3 + 12 + 3.0) << "the bound: MEMENTO_STOP_TIMEOUT_S + 12 s";
  EXPECT_NE(text.find("no exit 3 s after the stop signal"), std::string::npos) << text;
  for (pid_t p : ranks) EXPECT_FALSE(running(p)) << "rank process " << p << " is still alive";
}

TEST(MpirunSignalTest, ASecondSigtermKillsTheJobEvenWhenMpirunIgnoresItsSigterm) {
  const std::string root = scratch_dir("mpirun_second");
  const std::string log = root + "/run.log";
  // An mpirun that does nothing on any signal but SIGKILL.
  const std::string fake = root + "/mpirun";
  std::ofstream(fake) << "#!/bin/bash\ntrap : USR2 TERM INT\nwhile :; do sleep 0.2; done\n";
  chmod(fake.c_str(), 0755);
  std::vector<std::string> args = {"bash", kLauncher, "-np", "2", "whatever"};
  setenv("MEMENTO_MPIRUN", fake.c_str(), 1);
  const pid_t job = testing::spawn(args, log);
  unsetenv("MEMENTO_MPIRUN");
  const pid_t mpirun = mpirun_of(job);
  ASSERT_GT(mpirun, 0) << testing::read_file(log);
  std::this_thread::sleep_for(500ms);  // its traps are set
  kill(job, SIGTERM);
  std::this_thread::sleep_for(500ms);
  const auto start = std::chrono::steady_clock::now();
  kill(job, SIGTERM);
  const int code = testing::wait_exit_code(job);
  const double seconds = seconds_since(start);
  const std::string text = testing::read_file(log);
  EXPECT_EQ(code, 128 + SIGKILL) << text;
  EXPECT_LT(seconds, 12 + 3.0) << "the bound: 12 s after a second signal\n" << text;
  EXPECT_NE(text.find("SIGTERM again: ending the job"), std::string::npos) << text;
  EXPECT_NE(text.find("SIGKILL to it and its ranks"), std::string::npos) << text;
  EXPECT_FALSE(running(mpirun));
}

// install_signal_handlers() in a child process (its flags cannot be reset): the first stop signal
// is the one recorded; SIGUSR1 is a save request, not a stop.
int stop_signal_after(std::initializer_list<int> signals) {
  const pid_t pid = fork();
  if (pid == 0) {
    install_signal_handlers();
    for (int s : signals) raise(s);
    const bool saved = take_save_request();
    _exit(stop_signal() + (saved ? 100 : 0));
  }
  return testing::wait_exit_code(pid);
}

TEST(MpirunSignalTest, TheFirstStopSignalIsRecordedAndNamed) {
  EXPECT_EQ(stop_signal_after({SIGTERM}), SIGTERM);
  EXPECT_EQ(stop_signal_after({SIGINT, SIGTERM}), SIGINT);
  EXPECT_EQ(stop_signal_after({SIGUSR2, SIGINT}), SIGUSR2);
  EXPECT_EQ(stop_signal_after({SIGUSR1}), 100) << "SIGUSR1 saves and does not stop";
  EXPECT_EQ(stop_signal_after({}), 0);
  EXPECT_FALSE(stop_requested());
  EXPECT_STREQ(signal_name(SIGTERM), "SIGTERM");
  EXPECT_STREQ(signal_name(SIGINT), "SIGINT");
  EXPECT_STREQ(signal_name(SIGUSR2), "SIGUSR2");
  EXPECT_STREQ(signal_name(0), "no signal");
  EXPECT_STREQ(signal_name(1000), "an unknown signal");
}

}  // namespace
}  // namespace memento
