// A process killed while saving never leaves a checkpoint that find_latest returns and that fails
// to load: the save runs in a forked child (one per rank) that is SIGKILLed at every publish step
// and at random moments, and the parent then resumes.
#include <gtest/gtest.h>
#include <pthread.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <iostream>
#include <map>
#include <random>
#include <thread>

#include "checkpoint/checkpoint_dir.h"
#include "checkpoint/hdf5_checkpoint.h"
#include "tests/checkpoint/checkpoint_test_util.h"

namespace memento::checkpoint {
namespace {

using test_util::expect_identical;
using test_util::ScratchDir;
using test_util::shard_of;
using test_util::TensorSpec;
using test_util::TestState;
namespace fs = std::filesystem;

std::vector<TensorSpec> specs_of(int count, Shape shape) {
  std::vector<TensorSpec> specs;
  for (int i = 0; i < count; ++i) {
    specs.push_back({"model/model.layers." + std::to_string(i) + ".mlp.up_proj.weight", shape,
                     i % 2 ? DType::kBF16 : DType::kF32});
  }
  return specs;
}

// In the child: the point at which to die, and on which visit.
const char* g_kill_point = nullptr;
int g_kill_on_visit = 1;
int g_visits = 0;
// Shared with the parent: the last save point the child passed, for the test's report.
constexpr size_t kPointBytes = 64;
char* g_last_point = static_cast<char*>(
    mmap(nullptr, kPointBytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0));

void at_save_point(const char* point) {
  std::strncpy(g_last_point, point, kPointBytes - 1);
  if (g_kill_point != nullptr && std::strcmp(point, g_kill_point) == 0 &&
      ++g_visits == g_kill_on_visit) {
    raise(SIGKILL);
  }
}

struct ChildSave {
  uint64_t seed;
  int64_t step;
  const char* kill_point = nullptr;  // die at this save point ...
  int kill_on_visit = 1;
  int kill_after_us = -1;  // ... or this long after the child starts saving
};

// Forks a child that builds TestState(seed) and saves it at `step`; returns its wait status.
int save_in_child(const std::vector<TensorSpec>& specs, const std::string& root,
                  const ChildSave& plan) {
  int ready[2];
  if (pipe(ready) != 0) ADD_FAILURE() << "pipe: " << std::strerror(errno);
  const pid_t pid = fork();
  if (pid == 0) {
    close(ready[0]);
    int code = 0;
    try {
      TestState state(plan.seed, specs);
      g_kill_point = plan.kill_point;
      g_kill_on_visit = plan.kill_on_visit;
      detail::set_save_hook(at_save_point);
      const char go = 1;
      if (write(ready[1], &go, 1) != 1) code = 3;
      save_checkpoint(state.registry, root, plan.step);
    } catch (...) {
      code = 2;
    }
    _exit(code);
  }
  close(ready[1]);
  std::strcpy(g_last_point, "before tmp_dir_created");
  char go = 0;
  EXPECT_EQ(read(ready[0], &go, 1), 1) << "child died before saving";
  close(ready[0]);
  if (plan.kill_after_us >= 0) {
    std::this_thread::sleep_for(std::chrono::microseconds(plan.kill_after_us));
    kill(pid, SIGKILL);
  }
  int status = 0;
  waitpid(pid, &status, 0);
  return status;
}

bool killed(int status) { return WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL; }

// find_latest returns a checkpoint of `expected_step` that loads and equals TestState(seed).
void expect_resumes_from(const std::vector<TensorSpec>& specs, const std::string& root,
                         int64_t expected_step, uint64_t seed) {
  const auto dir = find_latest(root);
  ASSERT_TRUE(dir.has_value());
  EXPECT_EQ(*dir, root + "/" + step_dir_name(expected_step));
  TestState loaded(seed + 1000, specs), reference(seed, specs);
  load_checkpoint(loaded.registry, *dir);
  expect_identical(reference.registry, loaded.registry);
}

struct KillPoint {
  const char* point;
  int visit;
  bool new_is_latest;    // after the kill, latest names the new checkpoint
  bool new_dir_present;  // the new step directory exists (complete) after the kill
};

const KillPoint kKillPoints[] = {
    {"tmp_dir_created", 1, false, false},   {"dataset_written", 1, false, false},
    {"dataset_written", 5, false, false},   {"file_written", 1, false, false},
    {"file_synced", 1, false, false},       {"dir_published", 1, false, true},
    {"latest_tmp_written", 1, false, true}, {"latest_published", 1, true, true},
};

TEST(CheckpointCrash, KillAtEveryPublishStepLeavesAResumableCheckpoint) {
  const auto specs = specs_of(8, {64, 256});
  for (const KillPoint& k : kKillPoints) {
    SCOPED_TRACE(std::string(k.point) + " visit " + std::to_string(k.visit));
    ScratchDir root;
    TestState previous(100, specs);
    save_checkpoint(previous.registry, root.str(), 100);

    const int status = save_in_child(specs, root.str(), {200, 200, k.point, k.visit});
    ASSERT_TRUE(killed(status)) << "the child never reached the point; status " << status;
    EXPECT_EQ(fs::exists(root / "step_000000200"), k.new_dir_present);
    if (k.new_dir_present) {
      EXPECT_TRUE(is_complete_checkpoint(root / "step_000000200"));
    }
    if (std::strcmp(k.point, "dataset_written") == 0) {
      // A half-written file in the tmp directory is left behind, and ignored.
      EXPECT_TRUE(fs::exists(root / ".step_000000200.tmp/.rank_00000.h5.tmp"));
    }
    if (k.new_is_latest) {
      expect_resumes_from(specs, root.str(), 200, 200);
    } else {
      expect_resumes_from(specs, root.str(), 100, 100);
    }
    // Without the pointer, the newest complete directory is the one to resume from.
    fs::remove(root / "latest");
    if (k.new_dir_present) {
      expect_resumes_from(specs, root.str(), 200, 200);
    } else {
      expect_resumes_from(specs, root.str(), 100, 100);
    }
    // The next save after the crash works and is found.
    TestState next(300, specs);
    save_checkpoint(next.registry, root.str(), 300);
    expect_resumes_from(specs, root.str(), 300, 300);
  }
}

TEST(CheckpointCrash, KilledResaveOfTheSameStepKeepsOneCompleteCopy) {
  const auto specs = specs_of(4, {64, 64});
  for (const KillPoint& k : kKillPoints) {
    SCOPED_TRACE(k.point);
    ScratchDir root;
    TestState old_state(100, specs);
    save_checkpoint(old_state.registry, root.str(), 100);
    ASSERT_TRUE(killed(save_in_child(specs, root.str(), {999, 100, k.point, k.visit})));
    // Before the exchange the old copy is in place, after it the new one; never neither.
    expect_resumes_from(specs, root.str(), 100, k.new_dir_present ? 999 : 100);
  }
}

TEST(CheckpointCrash, KillAtRandomMomentsNeverLeavesAnIncompleteCheckpoint) {
  const auto specs = specs_of(16, {512, 1024});  // 24 MiB
  ScratchDir root;
  int64_t save_us = 0;
  {
    TestState first(100, specs);
    const auto start = std::chrono::steady_clock::now();
    save_checkpoint(first.registry, root.str(), 100);
    save_us = std::chrono::duration_cast<std::chrono::microseconds>(
                  std::chrono::steady_clock::now() - start)
                  .count();
    std::cout << "one save takes " << save_us / 1000 << " ms\n";
  }
  const uint64_t seed = std::random_device{}();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  // Up to 1.5 saves: the child saves slower than the parent (copy-on-write pages, busy CPUs).
  std::uniform_int_distribution<int> delay(0, static_cast<int>(save_us * 3 / 2));
  std::map<std::string, int> killed_after;  // last point passed -> kills

  int64_t previous = 100;
  int finished = 0;
  constexpr int kAttempts = 10;
  for (int attempt = 0; attempt < kAttempts; ++attempt) {
    const int64_t step = 200 + attempt;
    const int delay_us = delay(rng);
    SCOPED_TRACE("attempt " + std::to_string(attempt) + " killed after " +
                 std::to_string(delay_us) + " us");
    const int status =
        save_in_child(specs, root.str(), {static_cast<uint64_t>(step), step, nullptr, 1, delay_us});
    ASSERT_TRUE(killed(status) || (WIFEXITED(status) && WEXITSTATUS(status) == 0)) << status;
    const auto dir = find_latest(root.str());
    ASSERT_TRUE(dir.has_value());
    const int64_t found = *parse_step_dir_name(fs::path(*dir).filename().string());
    EXPECT_TRUE(found == previous || found == step) << found;
    if (!killed(status)) {
      EXPECT_EQ(found, step);
      ++finished;
    } else {
      ++killed_after[g_last_point];
    }
    expect_resumes_from(specs, root.str(), found, static_cast<uint64_t>(found));
    previous = found;
  }
  std::cout << finished << " of " << kAttempts << " saves finished before the kill; killed after:";
  for (const auto& [point, count] : killed_after) std::cout << " " << point << " x" << count;
  std::cout << "\n";
}

// ---------------------------------------------------------------------------------------------
// Several ranks, one process each as under mpirun, synchronized by a process-shared barrier.

class SharedBarrier {
 public:
  explicit SharedBarrier(int count)
      : barrier_(static_cast<pthread_barrier_t*>(mmap(nullptr, sizeof(pthread_barrier_t),
                                                      PROT_READ | PROT_WRITE,
                                                      MAP_SHARED | MAP_ANONYMOUS, -1, 0))) {
    pthread_barrierattr_t attr;
    pthread_barrierattr_init(&attr);
    pthread_barrierattr_setpshared(&attr, PTHREAD_PROCESS_SHARED);
    pthread_barrier_init(barrier_, &attr, static_cast<unsigned>(count));
    pthread_barrierattr_destroy(&attr);
  }
  SharedBarrier(const SharedBarrier&) = delete;
  SharedBarrier& operator=(const SharedBarrier&) = delete;
  // Only once every process that used it is gone (a killed one leaves it unusable).
  ~SharedBarrier() { munmap(barrier_, sizeof(pthread_barrier_t)); }
  void wait() { pthread_barrier_wait(barrier_); }

 private:
  pthread_barrier_t* barrier_;
};

constexpr int kWorld = 2;
constexpr unsigned kRankTimeoutS = 60;

// Rank r's part: elements [bounds[r], bounds[r + 1]) of all tensors together, cut unevenly.
std::vector<int64_t> rank_bounds(const std::vector<TensorSpec>& specs) {
  int64_t total = 0;
  for (const TensorSpec& s : specs) total += s.shape.numel();
  return {0, total * 2 / 5 + 3, total};
}

struct RankKill {
  int rank;  // dies at `point`, on visit `visit` ...
  const char* point;
  int visit;
  int after_us = -1;  // ... or this long after the ranks start saving
};

// Forks one process per rank, each saving its shard of TestState(seed) at `step`. With `kill`,
// SIGKILLs the victim rank, then the others as mpirun does when a rank dies; returns the
// victim's wait status (that of the last rank without `kill`).
int save_ranks_in_children(const std::vector<TensorSpec>& specs, const std::string& root,
                           uint64_t seed, int64_t step, const RankKill* kill) {
  SharedBarrier start(kWorld + 1);  // the ranks and the parent: the kill timer starts with them
  SharedBarrier barrier(kWorld);    // the communicator's barrier
  std::vector<pid_t> pids;
  for (int r = 0; r < kWorld; ++r) {
    const pid_t pid = fork();
    if (pid == 0) {
      alarm(kRankTimeoutS);  // a rank stuck at a barrier fails the test instead of hanging it
      int code = 0;
      try {
        TestState state(seed, specs);
        const StateRegistry shard = shard_of(state.registry, rank_bounds(specs), r);
        if (kill != nullptr && kill->rank == r && kill->point != nullptr) {
          g_kill_point = kill->point;
          g_kill_on_visit = kill->visit;
          detail::set_save_hook(at_save_point);
        }
        start.wait();
        save_checkpoint(shard, root, step, r, kWorld, [&] { barrier.wait(); });
      } catch (...) {
        code = 2;
      }
      _exit(code);
    }
    pids.push_back(pid);
  }
  start.wait();
  int status = 0;
  if (kill == nullptr) {
    for (const pid_t pid : pids) waitpid(pid, &status, 0);
    return status;
  }
  if (kill->after_us >= 0) {
    std::this_thread::sleep_for(std::chrono::microseconds(kill->after_us));
    ::kill(pids[kill->rank], SIGKILL);
  }
  waitpid(pids[kill->rank], &status, 0);
  for (int r = 0; r < kWorld; ++r) {
    if (r == kill->rank) continue;
    ::kill(pids[r], SIGKILL);
    waitpid(pids[r], nullptr, 0);
  }
  return status;
}

struct RankKillPoint {
  RankKill kill;
  bool new_is_latest;
  bool new_dir_present;
};

const RankKillPoint kRankKillPoints[] = {
    {{1, "dataset_written", 1}, false, false}, {{1, "dataset_written", 6}, false, false},
    {{1, "file_written", 1}, false, false},    {{1, "file_synced", 1}, false, false},
    {{0, "tmp_dir_created", 1}, false, false}, {{0, "file_synced", 1}, false, false},
    {{0, "dir_published", 1}, false, true},    {{0, "latest_tmp_written", 1}, false, true},
    {{0, "latest_published", 1}, true, true},
};

TEST(CheckpointCrash, KillingAnyRankAtAnyPublishStepLeavesAResumableCheckpoint) {
  const auto specs = specs_of(6, {64, 96});
  for (const RankKillPoint& k : kRankKillPoints) {
    SCOPED_TRACE("rank " + std::to_string(k.kill.rank) + " killed at " + k.kill.point + " visit " +
                 std::to_string(k.kill.visit));
    ScratchDir root;
    ASSERT_EQ(save_ranks_in_children(specs, root.str(), 100, 100, nullptr), 0);
    expect_resumes_from(specs, root.str(), 100, 100);

    const int status = save_ranks_in_children(specs, root.str(), 200, 200, &k.kill);
    ASSERT_TRUE(killed(status)) << "the rank never reached the point; status " << status;
    EXPECT_EQ(fs::exists(root / "step_000000200"), k.new_dir_present);
    if (k.new_dir_present) {
      EXPECT_TRUE(is_complete_checkpoint(root / "step_000000200"));
    }
    // Loaded by one rank: the two rank files are assembled.
    expect_resumes_from(specs, root.str(), k.new_is_latest ? 200 : 100,
                        k.new_is_latest ? 200 : 100);
    fs::remove(root / "latest");
    expect_resumes_from(specs, root.str(), k.new_dir_present ? 200 : 100,
                        k.new_dir_present ? 200 : 100);
    // The next save after the crash works and is found.
    ASSERT_EQ(save_ranks_in_children(specs, root.str(), 300, 300, nullptr), 0);
    expect_resumes_from(specs, root.str(), 300, 300);
  }
}

TEST(CheckpointCrash, KillingARankAtRandomMomentsNeverLeavesAnIncompleteCheckpoint) {
  const auto specs = specs_of(8, {256, 1024});  // 6 MiB
  ScratchDir root;
  const auto start = std::chrono::steady_clock::now();
  ASSERT_EQ(save_ranks_in_children(specs, root.str(), 100, 100, nullptr), 0);
  const auto save_us = std::chrono::duration_cast<std::chrono::microseconds>(
                           std::chrono::steady_clock::now() - start)
                           .count();
  const uint64_t seed = std::random_device{}();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int> delay(0, static_cast<int>(save_us * 3 / 2));
  int64_t previous = 100;
  constexpr int kAttempts = 8;
  for (int attempt = 0; attempt < kAttempts; ++attempt) {
    const int64_t step = 200 + attempt;
    const RankKill kill{attempt % kWorld, nullptr, 1, delay(rng)};
    SCOPED_TRACE("attempt " + std::to_string(attempt) + ": rank " + std::to_string(kill.rank) +
                 " killed after " + std::to_string(kill.after_us) + " us");
    const int status =
        save_ranks_in_children(specs, root.str(), static_cast<uint64_t>(step), step, &kill);
    ASSERT_TRUE(killed(status) || (WIFEXITED(status) && WEXITSTATUS(status) == 0)) << status;
    const auto dir = find_latest(root.str());
    ASSERT_TRUE(dir.has_value());
    const int64_t found = *parse_step_dir_name(fs::path(*dir).filename().string());
    EXPECT_TRUE(found == previous || found == step) << found;
    expect_resumes_from(specs, root.str(), found, static_cast<uint64_t>(found));
    previous = found;
  }
}

}  // namespace
}  // namespace memento::checkpoint
