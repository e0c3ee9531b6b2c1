// The rank grid: coordinates, group membership for every layout of 8 ranks and the 16-rank table
// of research/algo-parallel-memory.md section 4.1, and the config errors. The expected groups are
// written out literally (computed once by an independent script that buckets ranks by their other
// coordinates), never by the algorithm under test.
#include "core/parallel/parallel_dims.h"

#include <gtest/gtest.h>

#include <set>
#include <string>
#include <vector>

#include "core/error.h"

namespace memento::parallel {
namespace {

// "[0,1] [2,3]": the groups in order, each group's ranks in order.
std::string format_groups(const std::vector<std::vector<int>>& groups) {
  std::string s;
  for (const std::vector<int>& group : groups) {
    s += s.empty() ? "[" : " [";
    for (size_t i = 0; i < group.size(); ++i) {
      if (i) s += ',';
      s += std::to_string(group[i]);  // appended, not concatenated: GCC 12 -Wrestrict misfires
    }
    s += "]";
  }
  return s;
}

constexpr const char* kTokens[] = {"tp", "cp", "dp", "pp", "dp-cp", "tp-cp", "tp-pp"};

struct GoldenGrid {
  int64_t dp, tp, pp, cp;
  const char* groups[7];  // in the order of kTokens
};

// Every ordered factorisation of 8: {dp, tp, pp, cp, {tp, cp, dp, pp, dp-cp, tp-cp, tp-pp groups}}.
const GoldenGrid kGrids8[] = {
    {1,
     1,
     1,
     8,
     {"[0] [1] [2] [3] [4] [5] [6] [7]", "[0,1,2,3,4,5,6,7]", "[0] [1] [2] [3] [4] [5] [6] [7]",
      "[0] [1] [2] [3] [4] [5] [6] [7]", "[0,1,2,3,4,5,6,7]", "[0,1,2,3,4,5,6,7]",
      "[0] [1] [2] [3] [4] [5] [6] [7]"}},
    {1,
     1,
     2,
     4,
     {"[0] [1] [2] [3] [4] [5] [6] [7]", "[0,1,2,3] [4,5,6,7]", "[0] [1] [2] [3] [4] [5] [6] [7]",
      "[0,4] [1,5] [2,6] [3,7]", "[0,1,2,3] [4,5,6,7]", "[0,1,2,3] [4,5,6,7]",
      "[0,4] [1,5] [2,6] [3,7]"}},
    {1,
     1,
     4,
     2,
     {"[0] [1] [2] [3] [4] [5] [6] [7]", "[0,1] [2,3] [4,5] [6,7]",
      "[0] [1] [2] [3] [4] [5] [6] [7]", "[0,2,4,6] [1,3,5,7]", "[0,1] [2,3] [4,5] [6,7]",
      "[0,1] [2,3] [4,5] [6,7]", "[0,2,4,6] [1,3,5,7]"}},
    {1,
     1,
     8,
     1,
     {"[0] [1] [2] [3] [4] [5] [6] [7]", "[0] [1] [2] [3] [4] [5] [6] [7]",
      "[0] [1] [2] [3] [4] [5] [6] [7]", "[0,1,2,3,4,5,6,7]", "[0] [1] [2] [3] [4] [5] [6] [7]",
      "[0] [1] [2] [3] [4] [5] [6] [7]", "[0,1,2,3,4,5,6,7]"}},
    {1,
     2,
     1,
     4,
     {"[0,1] [2,3] [4,5] [6,7]", "[0,2,4,6] [1,3,5,7]", "[0] [1] [2] [3] [4] [5] [6] [7]",
      "[0] [1] [2] [3] [4] [5] [6] [7]", "[0,2,4,6] [1,3,5,7]", "[0,1,2,3,4,5,6,7]",
      "[0,1] [2,3] [4,5] [6,7]"}},
    {1,
     2,
     2,
     2,
     {"[0,1] [2,3] [4,5] [6,7]", "[0,2] [1,3] [4,6] [5,7]", "[0] [1] [2] [3] [4] [5] [6] [7]",
      "[0,4] [1,5] [2,6] [3,7]", "[0,2] [1,3] [4,6] [5,7]", "[0,1,2,3] [4,5,6,7]",
      "[0,1,4,5] [2,3,6,7]"}},
    {1,
     2,
     4,
     1,
     {"[0,1] [2,3] [4,5] [6,7]", "[0] [1] [2] [3] [4] [5] [6] [7]",
      "[0] [1] [2] [3] [4] [5] [6] [7]", "[0,2,4,6] [1,3,5,7]", "[0] [1] [2] [3] [4] [5] [6] [7]",
      "[0,1] [2,3] [4,5] [6,7]", "[0,1,2,3,4,5,6,7]"}},
    {1,
     4,
     1,
     2,
     {"[0,1,2,3] [4,5,6,7]", "[0,4] [1,5] [2,6] [3,7]", "[0] [1] [2] [3] [4] [5] [6] [7]",
      "[0] [1] [2] [3] [4] [5] [6] [7]", "[0,4] [1,5] [2,6] [3,7]", "[0,1,2,3,4,5,6,7]",
      "[0,1,2,3] [4,5,6,7]"}},
    {1,
     4,
     2,
     1,
     {"[0,1,2,3] [4,5,6,7]", "[0] [1] [2] [3] [4] [5] [6] [7]", "[0] [1] [2] [3] [4] [5] [6] [7]",
      "[0,4] [1,5] [2,6] [3,7]", "[0] [1] [2] [3] [4] [5] [6] [7]", "[0,1,2,3] [4,5,6,7]",
      "[0,1,2,3,4,5,6,7]"}},
    {1,
     8,
     1,
     1,
     {"[0,1,2,3,4,5,6,7]", "[0] [1] [2] [3] [4] [5] [6] [7]", "[0] [1] [2] [3] [4] [5] [6] [7]",
      "[0] [1] [2] [3] [4] [5] [6] [7]", "[0] [1] [2] [3] [4] [5] [6] [7]", "[0,1,2,3,4,5,6,7]",
      "[0,1,2,3,4,5,6,7]"}},
    {2,
     1,
     1,
     4,
     {"[0] [1] [2] [3] [4] [5] [6] [7]", "[0,1,2,3] [4,5,6,7]", "[0,4] [1,5] [2,6] [3,7]",
      "[0] [1] [2] [3] [4] [5] [6] [7]", "[0,1,2,3,4,5,6,7]", "[0,1,2,3] [4,5,6,7]",
      "[0] [1] [2] [3] [4] [5] [6] [7]"}},
    {2,
     1,
     2,
     2,
     {"[0] [1] [2] [3] [4] [5] [6] [7]", "[0,1] [2,3] [4,5] [6,7]", "[0,2] [1,3] [4,6] [5,7]",
      "[0,4] [1,5] [2,6] [3,7]", "[0,1,2,3] [4,5,6,7]", "[0,1] [2,3] [4,5] [6,7]",
      "[0,4] [1,5] [2,6] [3,7]"}},
    {2,
     1,
     4,
     1,
     {"[0] [1] [2] [3] [4] [5] [6] [7]", "[0] [1] [2] [3] [4] [5] [6] [7]",
      "[0,1] [2,3] [4,5] [6,7]", "[0,2,4,6] [1,3,5,7]", "[0,1] [2,3] [4,5] [6,7]",
      "[0] [1] [2] [3] [4] [5] [6] [7]", "[0,2,4,6] [1,3,5,7]"}},
    {2,
     2,
     1,
     2,
     {"[0,1] [2,3] [4,5] [6,7]", "[0,2] [1,3] [4,6] [5,7]", "[0,4] [1,5] [2,6] [3,7]",
      "[0] [1] [2] [3] [4] [5] [6] [7]", "[0,2,4,6] [1,3,5,7]", "[0,1,2,3] [4,5,6,7]",
      "[0,1] [2,3] [4,5] [6,7]"}},
    {2,
     2,
     2,
     1,
     {"[0,1] [2,3] [4,5] [6,7]", "[0] [1] [2] [3] [4] [5] [6] [7]", "[0,2] [1,3] [4,6] [5,7]",
      "[0,4] [1,5] [2,6] [3,7]", "[0,2] [1,3] [4,6] [5,7]", "[0,1] [2,3] [4,5] [6,7]",
      "[0,1,4,5] [2,3,6,7]"}},
    {2,
     4,
     1,
     1,
     {"[0,1,2,3] [4,5,6,7]", "[0] [1] [2] [3] [4] [5] [6] [7]", "[0,4] [1,5] [2,6] [3,7]",
      "[0] [1] [2] [3] [4] [5] [6] [7]", "[0,4] [1,5] [2,6] [3,7]", "[0,1,2,3] [4,5,6,7]",
      "[0,1,2,3] [4,5,6,7]"}},
    {4,
     1,
     1,
     2,
     {"[0] [1] [2] [3] [4] [5] [6] [7]", "[0,1] [2,3] [4,5] [6,7]", "[0,2,4,6] [1,3,5,7]",
      "[0] [1] [2] [3] [4] [5] [6] [7]", "[0,1,2,3,4,5,6,7]", "[0,1] [2,3] [4,5] [6,7]",
      "[0] [1] [2] [3] [4] [5] [6] [7]"}},
    {4,
     1,
     2,
     1,
     {"[0] [1] [2] [3] [4] [5] [6] [7]", "[0] [1] [2] [3] [4] [5] [6] [7]", "[0,1,2,3] [4,5,6,7]",
      "[0,4] [1,5] [2,6] [3,7]", "[0,1,2,3] [4,5,6,7]", "[0] [1] [2] [3] [4] [5] [6] [7]",
      "[0,4] [1,5] [2,6] [3,7]"}},
    {4,
     2,
     1,
     1,
     {"[0,1] [2,3] [4,5] [6,7]", "[0] [1] [2] [3] [4] [5] [6] [7]", "[0,2,4,6] [1,3,5,7]",
      "[0] [1] [2] [3] [4] [5] [6] [7]", "[0,2,4,6] [1,3,5,7]", "[0,1] [2,3] [4,5] [6,7]",
      "[0,1] [2,3] [4,5] [6,7]"}},
    {8,
     1,
     1,
     1,
     {"[0] [1] [2] [3] [4] [5] [6] [7]", "[0] [1] [2] [3] [4] [5] [6] [7]", "[0,1,2,3,4,5,6,7]",
      "[0] [1] [2] [3] [4] [5] [6] [7]", "[0,1,2,3,4,5,6,7]", "[0] [1] [2] [3] [4] [5] [6] [7]",
      "[0] [1] [2] [3] [4] [5] [6] [7]"}},
};

// research/algo-parallel-memory.md, section 4.1: tp = cp = dp = pp = 2.
const GoldenGrid kGrid16 = {2,
                            2,
                            2,
                            2,
                            {"[0,1] [2,3] [4,5] [6,7] [8,9] [10,11] [12,13] [14,15]",
                             "[0,2] [1,3] [4,6] [5,7] [8,10] [9,11] [12,14] [13,15]",
                             "[0,4] [1,5] [2,6] [3,7] [8,12] [9,13] [10,14] [11,15]",
                             "[0,8] [1,9] [2,10] [3,11] [4,12] [5,13] [6,14] [7,15]",
                             "[0,2,4,6] [1,3,5,7] [8,10,12,14] [9,11,13,15]",
                             "[0,1,2,3] [4,5,6,7] [8,9,10,11] [12,13,14,15]",
                             "[0,1,8,9] [2,3,10,11] [4,5,12,13] [6,7,14,15]"}};

void expect_grid(const GoldenGrid& g) {
  const ParallelDims dims{.dp = g.dp, .tp = g.tp, .pp = g.pp, .cp = g.cp};
  for (size_t k = 0; k < std::size(kTokens); ++k) {
    EXPECT_EQ(format_groups(group_ranks(dims, kTokens[k])), g.groups[k])
        << "dp=" << g.dp << " tp=" << g.tp << " pp=" << g.pp << " cp=" << g.cp << " token "
        << kTokens[k];
  }
}

TEST(GroupRanks, EveryLayoutOfEightRanks) {
  ASSERT_EQ(std::size(kGrids8), 20u);
  std::set<std::vector<int64_t>> seen;
  for (const GoldenGrid& g : kGrids8) {
    EXPECT_EQ(g.dp * g.tp * g.pp * g.cp, 8);
    EXPECT_TRUE(seen.insert({g.dp, g.tp, g.pp, g.cp}).second) << "a layout is listed twice";
    expect_grid(g);
  }
}

TEST(GroupRanks, SixteenRankTableOfTheResearchDigest) { expect_grid(kGrid16); }

// Megatron's parallel_state.py docstring: 16 GPUs, tp = 2, pp = 4, hence dp = 2.
TEST(GroupRanks, MegatronDocstringExample) {
  const ParallelDims dims{.dp = 2, .tp = 2, .pp = 4, .cp = 1};
  EXPECT_EQ(format_groups(group_ranks(dims, "dp")),
            "[0,2] [1,3] [4,6] [5,7] [8,10] [9,11] [12,14] [13,15]");
  EXPECT_EQ(format_groups(group_ranks(dims, "tp")),
            "[0,1] [2,3] [4,5] [6,7] [8,9] [10,11] [12,13] [14,15]");
  EXPECT_EQ(format_groups(group_ranks(dims, "pp")),
            "[0,4,8,12] [1,5,9,13] [2,6,10,14] [3,7,11,15]");
}

TEST(GroupRanks, EveryRankInExactlyOneGroupOfEachKind) {
  std::vector<GoldenGrid> grids(std::begin(kGrids8), std::end(kGrids8));
  grids.push_back(kGrid16);
  grids.push_back({3, 2, 1, 5, {}});
  for (const GoldenGrid& g : grids) {
    const ParallelDims dims{.dp = g.dp, .tp = g.tp, .pp = g.pp, .cp = g.cp};
    for (const char* token : kTokens) {
      std::vector<int> count(static_cast<size_t>(dims.world()), 0);
      const std::vector<std::vector<int>> groups = group_ranks(dims, token);
      for (size_t gi = 0; gi < groups.size(); ++gi) {
        EXPECT_EQ(groups[gi].size(), groups[0].size()) << token;
        for (size_t i = 0; i < groups[gi].size(); ++i) {
          const int rank = groups[gi][i];
          ASSERT_GE(rank, 0);
          ASSERT_LT(rank, dims.world());
          ++count[static_cast<size_t>(rank)];
          const GroupPosition position = group_position(dims, token, rank);
          EXPECT_EQ(position.group, static_cast<int>(gi));
          EXPECT_EQ(position.index, static_cast<int>(i));
        }
      }
      for (int c : count) EXPECT_EQ(c, 1) << token;
    }
  }
}

TEST(GroupRanks, TokenOrderDoesNotMatterAndUnknownAxesThrow) {
  const ParallelDims dims{.dp = 2, .tp = 2, .pp = 2, .cp = 2};
  EXPECT_EQ(group_ranks(dims, "cp-dp"), group_ranks(dims, "dp-cp"));
  EXPECT_THROW(group_ranks(dims, "ep"), ConfigError);
  EXPECT_THROW(group_ranks(dims, "dp-dp"), ConfigError);
  EXPECT_THROW(group_ranks(dims, ""), ConfigError);
  EXPECT_THROW(group_ranks(dims, "dp-"), ConfigError);
}

TEST(Coords, MegatronOrderTpFastestThenCpDpPp) {
  const ParallelDims dims{.dp = 2, .tp = 2, .pp = 2, .cp = 2};
  EXPECT_EQ(coords_of(dims, 0), (RankCoords{.tp = 0, .cp = 0, .dp = 0, .pp = 0}));
  EXPECT_EQ(coords_of(dims, 1), (RankCoords{.tp = 1, .cp = 0, .dp = 0, .pp = 0}));
  EXPECT_EQ(coords_of(dims, 2), (RankCoords{.tp = 0, .cp = 1, .dp = 0, .pp = 0}));
  EXPECT_EQ(coords_of(dims, 4), (RankCoords{.tp = 0, .cp = 0, .dp = 1, .pp = 0}));
  EXPECT_EQ(coords_of(dims, 8), (RankCoords{.tp = 0, .cp = 0, .dp = 0, .pp = 1}));
  EXPECT_EQ(coords_of(dims, 13), (RankCoords{.tp = 1, .cp = 0, .dp = 1, .pp = 1}));
  const ParallelDims odd{.dp = 3, .tp = 2, .pp = 1, .cp = 5};
  EXPECT_EQ(coords_of(odd, 29), (RankCoords{.tp = 1, .cp = 4, .dp = 2, .pp = 0}));
  for (int rank = 0; rank < odd.world(); ++rank)
    EXPECT_EQ(rank_of(odd, coords_of(odd, rank)), rank);
  EXPECT_THROW(coords_of(odd, 30), ConfigError);
  EXPECT_THROW(coords_of(odd, -1), ConfigError);
}

std::string validate_message(const ParallelDims& dims, int world_size) {
  try {
    dims.validate(world_size);
  } catch (const ConfigError& e) {
    return e.what();
  }
  return "(no error)";
}

TEST(ParallelDims, ValidateNamesTheProductAndTheJobSize) {
  EXPECT_EQ(
      validate_message({.dp = 2}, 4),
      "parallel.dp × tp × pp × cp = 2 × 1 × 1 × 1 = 2, but the job has 4 ranks (mpirun -np 4)");
  EXPECT_EQ(
      validate_message({.dp = 2, .tp = 2, .pp = 2, .cp = 1}, 1),
      "parallel.dp × tp × pp × cp = 2 × 2 × 2 × 1 = 8, but the job has 1 rank (mpirun -np 1)");
  EXPECT_EQ(validate_message({.dp = 1, .tp = 0}, 0), "parallel.tp = 0: must be at least 1");
  EXPECT_EQ(validate_message({.dp = -2}, 2), "parallel.dp = -2: must be at least 1");
  EXPECT_EQ(validate_message({.dp = 2, .tp = 2, .pp = 2, .cp = 2}, 16), "(no error)");
  EXPECT_EQ(validate_message({}, 1), "(no error)");
  EXPECT_EQ((ParallelDims{.dp = 3, .tp = 2, .pp = 1, .cp = 5}.world()), 30);
}

TEST(ParallelDims, RequireAvailableRejectsAxesNotBuiltYet) {
  EXPECT_NO_THROW((ParallelDims{.dp = 8}.require_available()));
  auto message = [](const ParallelDims& dims) -> std::string {
    try {
      dims.require_available();
    } catch (const ConfigError& e) {
      return e.what();
    }
    return "(no error)";
  };
  EXPECT_EQ(message({.tp = 2}),
            "parallel.tp = 2: tensor parallelism is not available in this build yet");
  EXPECT_EQ(message({.pp = 4}),
            "parallel.pp = 4: pipeline parallelism is not available in this build yet");
  EXPECT_EQ(message({.cp = 2}),
            "parallel.cp = 2: context parallelism is not available in this build yet");
}

}  // namespace
}  // namespace memento::parallel
