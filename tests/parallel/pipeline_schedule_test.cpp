// The pipeline schedules as data: 1F1B and Megatron's interleaved 1F1B equal golden event tables
// (written out below; 1F1B's read directly as warm-up forwards, one-forward-one-backward, then the
// remaining backwards), every table is executable across the stages without a deadlock, and a
// 1F1B stage holds at most p - r micro-batches' activations.
#include "parallel/pipeline_schedule.h"

#include <gtest/gtest.h>

#include <map>
#include <set>
#include <string>
#include <utility>
#include <vector>

namespace memento::parallel {
namespace {

struct Golden {
  int p, v;
  int64_t m;
  std::vector<std::string> stages;  // one table per pipeline rank
};

const std::vector<Golden>& golden() {
  static const std::vector<Golden> tables = {
      {2, 1, 4, {"F0 F1 B0 F2 B1 F3 B2 B3", "F0 B0 F1 B1 F2 B2 F3 B3"}},
      {4,
       1,
       8,
       {"F0 F1 F2 F3 B0 F4 B1 F5 B2 F6 B3 F7 B4 B5 B6 B7",
        "F0 F1 F2 B0 F3 B1 F4 B2 F5 B3 F6 B4 F7 B5 B6 B7",
        "F0 F1 B0 F2 B1 F3 B2 F4 B3 F5 B4 F6 B5 F7 B6 B7",
        "F0 B0 F1 B1 F2 B2 F3 B3 F4 B4 F5 B5 F6 B6 F7 B7"}},
      {4,
       2,
       8,
       {"F0.0 F1.0 F2.0 F3.0 F0.1 F1.1 F2.1 F3.1 F4.0 F5.0 F6.0 B0.1 F7.0 B1.1 F4.1 B2.1 F5.1 B3.1 "
        "F6.1 B0.0 F7.1 B1.0 B2.0 B3.0 B4.1 B5.1 B6.1 B7.1 B4.0 B5.0 B6.0 B7.0",
        "F0.0 F1.0 F2.0 F3.0 F0.1 F1.1 F2.1 F3.1 F4.0 B0.1 F5.0 B1.1 F6.0 B2.1 F7.0 B3.1 F4.1 B0.0 "
        "F5.1 B1.0 F6.1 B2.0 F7.1 B3.0 B4.1 B5.1 B6.1 B7.1 B4.0 B5.0 B6.0 B7.0",
        "F0.0 F1.0 F2.0 F3.0 F0.1 F1.1 F2.1 B0.1 F3.1 B1.1 F4.0 B2.1 F5.0 B3.1 F6.0 B0.0 F7.0 B1.0 "
        "F4.1 B2.0 F5.1 B3.0 F6.1 B4.1 F7.1 B5.1 B6.1 B7.1 B4.0 B5.0 B6.0 B7.0",
        "F0.0 F1.0 F2.0 F3.0 F0.1 B0.1 F1.1 B1.1 F2.1 B2.1 F3.1 B3.1 F4.0 B0.0 F5.0 B1.0 F6.0 B2.0 "
        "F7.0 B3.0 F4.1 B4.1 F5.1 B5.1 F6.1 B6.1 F7.1 B7.1 B4.0 B5.0 B6.0 B7.0"}},
      {4,
       2,
       12,
       {"F0.0 F1.0 F2.0 F3.0 F0.1 F1.1 F2.1 F3.1 F4.0 F5.0 F6.0 B0.1 F7.0 B1.1 F4.1 B2.1 F5.1 B3.1 "
        "F6.1 B0.0 F7.1 B1.0 F8.0 B2.0 F9.0 B3.0 F10.0 B4.1 F11.0 B5.1 F8.1 B6.1 F9.1 B7.1 F10.1 "
        "B4.0 F11.1 B5.0 B6.0 B7.0 B8.1 B9.1 B10.1 B11.1 B8.0 B9.0 B10.0 B11.0",
        "F0.0 F1.0 F2.0 F3.0 F0.1 F1.1 F2.1 F3.1 F4.0 B0.1 F5.0 B1.1 F6.0 B2.1 F7.0 B3.1 F4.1 B0.0 "
        "F5.1 B1.0 F6.1 B2.0 F7.1 B3.0 F8.0 B4.1 F9.0 B5.1 F10.0 B6.1 F11.0 B7.1 F8.1 B4.0 F9.1 "
        "B5.0 F10.1 B6.0 F11.1 B7.0 B8.1 B9.1 B10.1 B11.1 B8.0 B9.0 B10.0 B11.0",
        "F0.0 F1.0 F2.0 F3.0 F0.1 F1.1 F2.1 B0.1 F3.1 B1.1 F4.0 B2.1 F5.0 B3.1 F6.0 B0.0 F7.0 B1.0 "
        "F4.1 B2.0 F5.1 B3.0 F6.1 B4.1 F7.1 B5.1 F8.0 B6.1 F9.0 B7.1 F10.0 B4.0 F11.0 B5.0 F8.1 "
        "B6.0 F9.1 B7.0 F10.1 B8.1 F11.1 B9.1 B10.1 B11.1 B8.0 B9.0 B10.0 B11.0",
        "F0.0 F1.0 F2.0 F3.0 F0.1 B0.1 F1.1 B1.1 F2.1 B2.1 F3.1 B3.1 F4.0 B0.0 F5.0 B1.0 F6.0 B2.0 "
        "F7.0 B3.0 F4.1 B4.1 F5.1 B5.1 F6.1 B6.1 F7.1 B7.1 F8.0 B4.0 F9.0 B5.0 F10.0 B6.0 F11.0 "
        "B7.0 F8.1 B8.1 F9.1 B9.1 F10.1 B10.1 F11.1 B11.1 B8.0 B9.0 B10.0 B11.0"}}};
  return tables;
}

TEST(PipelineSchedule, EventsEqualTheGoldenTables) {
  for (const Golden& g : golden()) {
    for (int r = 0; r < g.p; ++r) {
      SCOPED_TRACE(testing::Message()
                   << "p " << g.p << " v " << g.v << " m " << g.m << " rank " << r);
      EXPECT_EQ(format_events(pipeline_events(g.p, g.v, r, g.m), g.v), g.stages[r]);
    }
  }
}

// Runs every stage's table in lockstep: a forward of virtual stage s = chunk * p + rank needs the
// forward of s - 1 (its input), a backward of s needs the backward of s + 1 (its output's
// gradient) and its own forward. Fails when no stage can move (a deadlock) or an event repeats.
void expect_executable(int p, int v, int64_t m) {
  std::vector<std::vector<PipelineEvent>> tables;
  for (int r = 0; r < p; ++r) tables.push_back(pipeline_events(p, v, r, m));
  std::set<std::tuple<char, int64_t, int>> done;  // (kind, micro-batch, virtual stage)
  std::vector<size_t> next(p, 0);
  const int last = p * v - 1;
  for (bool moved = true; moved;) {
    moved = false;
    for (int r = 0; r < p; ++r) {
      if (next[r] == tables[r].size()) continue;
      const PipelineEvent& e = tables[r][next[r]];
      const int s = e.chunk * p + r;
      const bool forward = e.kind == PipelineEvent::Kind::kForward;
      const bool ready = forward ? (s == 0 || done.contains({'F', e.micro_batch, s - 1}))
                                 : done.contains({'F', e.micro_batch, s}) &&
                                       (s == last || done.contains({'B', e.micro_batch, s + 1}));
      if (!ready) continue;
      ASSERT_TRUE(done.insert({forward ? 'F' : 'B', e.micro_batch, s}).second) << "repeated";
      ++next[r];
      moved = true;
    }
  }
  for (int r = 0; r < p; ++r)
    EXPECT_EQ(next[r], tables[r].size()) << "rank " << r << " is stuck (a deadlock)";
  EXPECT_EQ(done.size(), static_cast<size_t>(2 * m * p * v));  // every event once
}

TEST(PipelineSchedule, EveryTableRunsAcrossTheStagesWithoutADeadlock) {
  for (const Golden& g : golden()) expect_executable(g.p, g.v, g.m);
  expect_executable(3, 1, 2);  // fewer micro-batches than stages
  expect_executable(2, 3, 6);
}

TEST(PipelineSchedule, A1F1BStageHoldsAtMostPMinusRMicroBatches) {
  for (const auto& [p, m] : std::vector<std::pair<int, int64_t>>{{2, 4}, {4, 8}, {4, 12}}) {
    for (int r = 0; r < p; ++r) {
      int64_t live = 0, peak = 0;
      for (const PipelineEvent& e : pipeline_events(p, 1, r, m)) {
        live += e.kind == PipelineEvent::Kind::kForward ? 1 : -1;
        peak = std::max(peak, live);
      }
      EXPECT_EQ(live, 0);
      EXPECT_EQ(peak, p - r) << "p " << p << " rank " << r;
    }
  }
}

TEST(PipelineSchedule, InterleavingNeedsMicroBatchesInMultiplesOfTheStages) {
  EXPECT_THROW(pipeline_events(4, 2, 0, 6), ConfigError);
  EXPECT_NO_THROW(pipeline_events(4, 1, 0, 6));
}

}  // namespace
}  // namespace memento::parallel
