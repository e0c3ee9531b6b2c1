// scripts/slurm/train.sbatch on a real one-node Slurm cluster (scripts/slurm/local_cluster.sh):
// a 2-task job trains through srun --mpi=pmix to completion; a job sent SIGTERM saves a
// checkpoint, requeues itself, resumes and ends with the losses of a run never interrupted.
// Needs root and Debian's slurmctld, slurmd, slurm-client and munge; skipped otherwise.
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <optional>
#include <regex>
#include <thread>

#include "checkpoint/hdf5_checkpoint.h"
#include "launch/e2e_testing.h"

namespace memento {
namespace {

using namespace std::chrono_literals;
namespace fs = std::filesystem;

constexpr int64_t kSteps = 4000;  // about 6 s on two ranks of one idle core each
// A job fails the test when neither its state nor its metrics change for kStallTimeout (a hang),
// or when it takes longer than kJobTimeout (on a machine shared with other work it is slow).
constexpr auto kStallTimeout = 90s;
constexpr auto kJobTimeout = 480s;

const std::string kSourceDir = MEMENTO_SOURCE_DIR;
const std::string kClusterScript = kSourceDir + "/scripts/slurm/local_cluster.sh";
const std::string kBatchScript = kSourceDir + "/scripts/slurm/train.sbatch";

// For the shell: paths here have no single quotes.
std::string shell_quoted(const std::string& s) { return "'" + s + "'"; }

// What `scontrol show job` says about a job.
struct JobInfo {
  std::string state;  // PENDING, RUNNING, COMPLETED, FAILED, ...; empty if unknown
  int restarts = -1;
  std::string exit_code;  // "0:0" (code:signal)
};

JobInfo show_job(const std::string& id) {
  const auto r = testing::run_command("scontrol show job " + id + " 2>&1");
  JobInfo info;
  std::smatch m;
  if (std::regex_search(r.output, m, std::regex("JobState=(\\S+)"))) info.state = m[1];
  if (std::regex_search(r.output, m, std::regex("Restarts=(\\d+)")))
    info.restarts = std::stoi(m[1]);
  if (std::regex_search(r.output, m, std::regex(" ExitCode=(\\S+)"))) info.exit_code = m[1];
  return info;
}

bool finished(const JobInfo& job) {
  for (const char* s : {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY",
                        "BOOT_FAIL", "DEADLINE", "PREEMPTED"})
    if (job.state == s) return true;
  return false;
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

class SlurmTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (geteuid() != 0) GTEST_SKIP() << "the one-node Slurm cluster runs its daemons as root";
    if (testing::run_command("command -v slurmctld && command -v slurmd && command -v munged && "
                             "command -v sbatch")
            .exit_code != 0)
      GTEST_SKIP() << "Slurm is not installed (slurmctld, slurmd, slurm-client, munge: "
                      "scripts/install_deps.sh)";
    // Clusters that an earlier, killed run of these tests left behind would compete for the
    // cores: stop them first. (ctest runs the two tests side by side: a live one is left alone.)
    const fs::path scratch = fs::path(MEMENTO_BINARY_DIR) / "test-scratch";
    std::error_code error;
    for (const auto& entry : fs::directory_iterator(scratch, error)) {
      if (!entry.path().filename().string().starts_with("slurm_")) continue;
      const std::string owner = testing::read_file(entry.path() / "owner.pid");
      const bool owner_alive = !owner.empty() && kill(std::stoi(owner), 0) == 0;
      if (!owner_alive && fs::exists(entry.path() / "cluster" / "run" / "slurmctld.pid"))
        stop_cluster(entry.path() / "cluster");
    }
    const std::string name = ::testing::UnitTest::GetInstance()->current_test_info()->name();
    root_ = testing::scratch_dir("slurm_" + name);
    std::ofstream(root_ + "/owner.pid") << getpid();
    cluster_ = root_ + "/cluster";
    const auto r = testing::run_command("SLURM_LOCAL_CPUS=2 " + shell_quoted(kClusterScript) +
                                        " start " + shell_quoted(cluster_) + " 2>&1");
    ASSERT_EQ(r.exit_code, 0) << "local_cluster.sh start failed:\n" << r.output;
    started_ = true;
    setenv("SLURM_CONF", (cluster_ + "/etc/slurm.conf").c_str(), 1);
    // sbatch passes the environment to the job.
    setenv("MEMENTO_TRAINER", testing::trainer_binary().c_str(), 1);
    setenv("OMP_WAIT_POLICY", "passive", 1);
    config_ = write_setup();
  }

  void TearDown() override {
    if (started_) stop_cluster(cluster_);
    unsetenv("SLURM_CONF");
  }

  static void stop_cluster(const std::string& dir) {
    const auto r =
        testing::run_command(shell_quoted(kClusterScript) + " stop " + shell_quoted(dir) + " 2>&1");
    EXPECT_EQ(r.exit_code, 0) << "local_cluster.sh stop failed:\n" << r.output;
  }

  // A tiny CPU model (as in distributed_cli_test.cpp) on real text; the run takes ~10 s.
  std::string write_setup() const {
    const std::string text = testing::fortunes_text(150000);
    testing::write_byte_tokens(root_ + "/train.bin", text.substr(0, 140000));
    testing::write_byte_tokens(root_ + "/val.bin", text.substr(140000));
    const std::string config = root_ + "/config.yaml";
    std::ofstream(config) << "model: {vocab_size: 256, dim: 32, n_layers: 2, n_heads: 4, "
                             "n_kv_heads: 2, ffn_dim: 64, max_seq_len: 32, "
                             "layer_pattern: [softmax, linear]}\n"
                          << "data: {train: " << root_ << "/train.bin, val: " << root_
                          << "/val.bin}\n"
                          << "train: {seq_len: 16, micro_batch: 1, global_batch: 8, steps: "
                          << kSteps << ", eval_every: 0, threads: 1, peak_tflops: 1}\n"
                          << "optim: {lr: 1.0e-2, min_lr: 1.0e-3, warmup_steps: 2}\n"
                          << "checkpoint: {every: 0, keep: 100}\n";
    return config;
  }

  // Submits train.sbatch for a run in root_/<name>; returns the job id. The time limit ends a
  // hung job even when a killed test leaves its cluster running.
  std::string submit(const std::string& name) {
    const auto r = testing::run_command(
        "cd " + shell_quoted(root_) + " && sbatch --parsable --time=10 --job-name=" + name +
        " --output=" + shell_quoted(output(name)) + " " + shell_quoted(kBatchScript) + " " +
        shell_quoted(config_) + " --set run.out_dir=" + shell_quoted(out_dir(name)) + " 2>&1");
    EXPECT_EQ(r.exit_code, 0) << "sbatch failed:\n" << r.output << diagnostics("");
    std::smatch m;
    const std::string out = r.output;
    return std::regex_search(out, m, std::regex("^(\\d+)")) ? std::string(m[1]) : "";
  }

  std::string out_dir(const std::string& name) const { return root_ + "/" + name; }
  std::string output(const std::string& name) const { return root_ + "/" + name + ".out"; }

  // The job's output and the daemons' logs, for failure messages.
  std::string diagnostics(const std::string& name) const {
    std::string text;
    auto tail = [&text](const std::string& path, size_t bytes) {
      const std::string s = testing::read_file(path);
      text += "\n---- " + path + (s.size() > bytes ? " (end)" : "") + "\n" +
              (s.size() > bytes ? s.substr(s.size() - bytes) : s);
    };
    if (!name.empty()) tail(output(name), 6000);
    tail(cluster_ + "/log/slurmctld.log", 4000);
    tail(cluster_ + "/log/slurmd.log", 4000);
    return text;
  }

  // Polls job `id` (a run in root_/<name>) until `done` holds; nullopt after kStallTimeout
  // without a change of state or metrics, or after kJobTimeout.
  template <typename Pred>
  std::optional<JobInfo> wait_job(const std::string& id, const std::string& name, Pred done) {
    const auto start = std::chrono::steady_clock::now();
    auto last_change = start;
    std::string last_seen;
    for (auto now = start; now - last_change < kStallTimeout && now - start < kJobTimeout;
         now = std::chrono::steady_clock::now()) {
      const JobInfo job = show_job(id);
      if (done(job)) return job;
      const std::string seen = job.state + "/" + std::to_string(job.restarts) + "/" +
                               std::to_string(metrics_bytes(name));
      if (seen != last_seen) last_change = now;
      last_seen = seen;
      std::this_thread::sleep_for(250ms);
    }
    return std::nullopt;
  }

  size_t metrics_bytes(const std::string& name) const {
    std::error_code error;
    const auto size = fs::file_size(out_dir(name) + "/metrics.jsonl", error);
    return error ? 0 : static_cast<size_t>(size);
  }

  static std::string timed_out(const std::string& id) {
    return "job " + id + " did not finish: no progress in " +
           std::to_string(kStallTimeout.count()) + " s, or not done in " +
           std::to_string(kJobTimeout.count()) + " s";
  }

  std::string root_, cluster_, config_;
  bool started_ = false;
};

TEST_F(SlurmTest, BatchJobTrainsWithTwoRanksToCompletion) {
  const std::string id = submit("complete");
  ASSERT_FALSE(id.empty());
  const auto job = wait_job(id, "complete", finished);
  ASSERT_TRUE(job) << timed_out(id) << diagnostics("complete");
  ASSERT_EQ(job->state, "COMPLETED") << diagnostics("complete");
  EXPECT_EQ(job->exit_code, "0:0");
  EXPECT_EQ(job->restarts, 0);
  const std::string log = testing::read_file(output("complete"));
  EXPECT_NE(log.find("data parallel: 2 ranks"), std::string::npos)
      << "two MPI ranks through srun, dp = 2" << diagnostics("complete");
  const auto loss = losses(out_dir("complete"));
  ASSERT_EQ(loss.size(), static_cast<size_t>(kSteps)) << diagnostics("complete");
  EXPECT_LT(loss.rbegin()->second, loss.begin()->second) << "the loss falls";
}

TEST_F(SlurmTest, PreemptedJobSavesRequeuesResumesAndEndsWithTheSameLosses) {
  const std::string id = submit("preempted");
  ASSERT_FALSE(id.empty());
  // Preempt it once it trains: metrics.jsonl has lines (signal handlers are installed by then).
  const auto training = wait_job(id, "preempted", [this](const JobInfo& job) {
    return finished(job) || metrics_bytes("preempted") > 0;
  });
  ASSERT_TRUE(training) << "job " << id << " did not start training" << diagnostics("preempted");
  ASSERT_FALSE(finished(*training)) << "job " << id << " ended" << diagnostics("preempted");
  // As Slurm does at --signal=TERM@120 or on preemption: SIGTERM to every task.
  const auto sent = testing::run_command("scancel --signal=TERM " + id + " 2>&1");
  ASSERT_EQ(sent.exit_code, 0) << sent.output;

  // The uninterrupted reference runs while the preempted job waits to be eligible again.
  const std::string reference_id = submit("reference");
  ASSERT_FALSE(reference_id.empty());
  const auto reference_job = wait_job(reference_id, "reference", finished);
  ASSERT_TRUE(reference_job) << timed_out(reference_id) << diagnostics("reference");
  ASSERT_EQ(reference_job->state, "COMPLETED") << diagnostics("reference");

  const auto job = wait_job(id, "preempted", finished);
  ASSERT_TRUE(job) << timed_out(id) << diagnostics("preempted");
  ASSERT_EQ(job->state, "COMPLETED") << diagnostics("preempted");
  EXPECT_EQ(job->exit_code, "0:0");
  EXPECT_EQ(job->restarts, 1) << "requeued once" << diagnostics("preempted");

  const std::string log = testing::read_file(output("preempted"));
  std::smatch m;
  ASSERT_TRUE(std::regex_search(log, m, std::regex("saving a checkpoint at step (\\d+)")))
      << "the trainer saw SIGTERM" << diagnostics("preempted");
  const int64_t stopped_at = std::stoll(m[1]);
  EXPECT_GT(stopped_at, 0);
  EXPECT_LT(stopped_at, kSteps) << "preempted before the end";
  char step_dir[32];
  std::snprintf(step_dir, sizeof(step_dir), "step_%09lld", static_cast<long long>(stopped_at));
  const std::string checkpoint = out_dir("preempted") + "/checkpoints/" + step_dir;
  EXPECT_TRUE(checkpoint::is_complete_checkpoint(checkpoint)) << checkpoint;
  EXPECT_NE(log.find("preempted: checkpoint saved; requeueing job " + id), std::string::npos)
      << diagnostics("preempted");
  EXPECT_NE(log.find("resumed from " + checkpoint + " at step " + std::to_string(stopped_at)),
            std::string::npos)
      << diagnostics("preempted");

  const auto loss = losses(out_dir("preempted"));
  const auto reference = losses(out_dir("reference"));
  ASSERT_EQ(reference.size(), static_cast<size_t>(kSteps)) << diagnostics("reference");
  ASSERT_EQ(loss.size(), static_cast<size_t>(kSteps)) << "every step logged once, before or after "
                                                         "the preemption"
                                                      << diagnostics("preempted");
  for (const auto& [step, value] : reference)
    ASSERT_NEAR(loss.at(step), value, 1e-5 * value) << "step " << step;
}

}  // namespace
}  // namespace memento
