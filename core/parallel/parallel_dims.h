// The rank grid (ARCHITECTURE contract 5): how many ranks each parallel axis spans, which grid
// coordinates a rank has, and which ranks form each axis's groups. Megatron's order: tp varies
// fastest, then cp, dp, pp, so rank = tp + TP·(cp + CP·(dp + DP·pp)).
#pragma once

#include <cstdint>
#include <string_view>
#include <vector>

namespace memento::parallel {

struct ParallelDims {
  int64_t dp = 1;  // data parallel
  int64_t tp = 1;  // tensor parallel
  int64_t pp = 1;  // pipeline parallel
  int64_t cp = 1;  // context (sequence) parallel

  int64_t world() const { return dp * tp * pp * cp; }
  // Throws ConfigError when an axis is not positive or dp·tp·pp·cp differs from world_size.
  void validate(int world_size) const;
  // Throws ConfigError for an axis this build cannot run yet (tp, pp or cp above 1).
  void require_available() const;
};

// A rank's coordinates on the grid, each in [0, size of its axis).
struct RankCoords {
  int64_t tp = 0, cp = 0, dp = 0, pp = 0;
  friend bool operator==(const RankCoords&, const RankCoords&) = default;
};

RankCoords coords_of(const ParallelDims& dims, int rank);  // rank in [0, dims.world())
int rank_of(const ParallelDims& dims, const RankCoords& coords);

// The groups of an axis token: "tp", "cp", "dp", "pp", "dp-cp", "tp-cp" or "tp-pp" (any
// '-'-joined set of the four axes). A group holds the ranks that share every coordinate outside
// the token; ranks in a group are ordered by the token's coordinates (the leftmost in Megatron's
// order fastest) and groups by the other coordinates, as Megatron's RankGenerator. Every rank is
// in exactly one group. Throws ConfigError on an unknown token.
std::vector<std::vector<int>> group_ranks(const ParallelDims& dims, std::string_view axes);

// Where `rank` sits in group_ranks(dims, axes): the group's index and the rank's index in it.
struct GroupPosition {
  int group = 0;
  int index = 0;
};
GroupPosition group_position(const ParallelDims& dims, std::string_view axes, int rank);

}  // namespace memento::parallel
