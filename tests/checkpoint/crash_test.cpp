// A process killed while saving never leaves a checkpoint that find_latest returns and that fails
// to load: the save runs in a forked child that is SIGKILLed at every publish step and at random
// moments, and the parent then resumes.
#include <gtest/gtest.h>
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
      // A half-written file in a tmp directory is left behind, and ignored.
      bool tmp_with_file = false;
      for (const auto& item : fs::directory_iterator(root.str())) {
        const std::string name = item.path().filename().string();
        if (name.starts_with(".step_000000200.tmp.")) {
          tmp_with_file = fs::exists(item.path() / "rank_00000.h5");
        }
      }
      EXPECT_TRUE(tmp_with_file);
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

}  // namespace
}  // namespace memento::checkpoint
