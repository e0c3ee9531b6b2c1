#include "core/parallel/parallel_dims.h"

#include <array>
#include <string>
#include <utility>

#include "core/error.h"

namespace memento::parallel {
namespace {

// Axes in Megatron's order, the leftmost varying fastest in the rank.
constexpr std::array<std::string_view, 4> kAxisNames = {"tp", "cp", "dp", "pp"};
constexpr std::array<std::string_view, 4> kAxisWords = {"tensor", "context", "data", "pipeline"};

std::array<int64_t, 4> sizes_of(const ParallelDims& dims) {
  return {dims.tp, dims.cp, dims.dp, dims.pp};
}

// Which axes a token such as "dp-cp" names.
std::array<bool, 4> parse_axes(std::string_view axes) {
  std::array<bool, 4> mask{};
  std::string_view rest = axes;
  while (true) {
    const size_t dash = rest.find('-');
    const std::string_view name = rest.substr(0, dash);
    bool known = false;
    for (size_t a = 0; a < kAxisNames.size(); ++a) {
      if (name == kAxisNames[a]) {
        MEMENTO_EXPECT(!mask[a], ConfigError, "process group '", axes, "' names ", name, " twice");
        mask[a] = true;
        known = true;
      }
    }
    MEMENTO_EXPECT(known, ConfigError, "process group '", axes,
                   "': expected axes tp, cp, dp or pp joined by '-', as in \"dp-cp\"");
    if (dash == std::string_view::npos) break;
    rest = rest.substr(dash + 1);
  }
  return mask;
}

}  // namespace

void ParallelDims::validate(int world_size) const {
  const std::array<std::pair<const char*, int64_t>, 4> axes = {
      {{"dp", dp}, {"tp", tp}, {"pp", pp}, {"cp", cp}}};
  for (const auto& [name, value] : axes) {
    MEMENTO_EXPECT(value >= 1, ConfigError, "parallel.", name, " = ", value,
                   ": must be at least 1");
  }
  MEMENTO_EXPECT(world() == world_size, ConfigError, "parallel.dp × tp × pp × cp = ", dp, " × ", tp,
                 " × ", pp, " × ", cp, " = ", world(), ", but the job has ", world_size,
                 world_size == 1 ? " rank" : " ranks", " (mpirun -np ", world_size, ")");
}

void ParallelDims::require_available() const {
  const std::array<int64_t, 4> sizes = sizes_of(*this);
  for (size_t a = 0; a < sizes.size(); ++a) {
    if (kAxisNames[a] == "dp") continue;
    MEMENTO_EXPECT(sizes[a] == 1, ConfigError, "parallel.", kAxisNames[a], " = ", sizes[a], ": ",
                   kAxisWords[a], " parallelism is not available in this build yet");
  }
}

RankCoords coords_of(const ParallelDims& dims, int rank) {
  MEMENTO_EXPECT(rank >= 0 && rank < dims.world(), ConfigError, "rank ", rank,
                 " is outside the grid of ", dims.world(), " ranks");
  int64_t r = rank;
  RankCoords c;
  c.tp = r % dims.tp;
  r /= dims.tp;
  c.cp = r % dims.cp;
  r /= dims.cp;
  c.dp = r % dims.dp;
  c.pp = r / dims.dp;
  return c;
}

int rank_of(const ParallelDims& dims, const RankCoords& c) {
  return static_cast<int>(c.tp + dims.tp * (c.cp + dims.cp * (c.dp + dims.dp * c.pp)));
}

// Megatron's generate_masked_orthogonal_rank_groups: the masked axes index the rank within a
// group, the others index the group, each combined with the leftmost axis fastest.
std::vector<std::vector<int>> group_ranks(const ParallelDims& dims, std::string_view axes) {
  const std::array<bool, 4> masked = parse_axes(axes);
  const std::array<int64_t, 4> sizes = sizes_of(dims);
  std::array<int64_t, 4> stride{};
  int64_t s = 1;
  for (size_t a = 0; a < sizes.size(); ++a) {
    stride[a] = s;
    s *= sizes[a];
  }
  int64_t group_size = 1;
  int64_t num_groups = 1;
  for (size_t a = 0; a < sizes.size(); ++a) (masked[a] ? group_size : num_groups) *= sizes[a];

  // The rank at combined index `index` over the axes where masked[a] == want.
  auto offset = [&](int64_t index, bool want) {
    int64_t rank = 0;
    for (size_t a = 0; a < sizes.size(); ++a) {
      if (masked[a] != want) continue;
      rank += (index % sizes[a]) * stride[a];
      index /= sizes[a];
    }
    return rank;
  };

  std::vector<std::vector<int>> groups(static_cast<size_t>(num_groups));
  for (int64_t g = 0; g < num_groups; ++g) {
    const int64_t base = offset(g, false);
    groups[g].reserve(static_cast<size_t>(group_size));
    for (int64_t i = 0; i < group_size; ++i) {
      groups[g].push_back(static_cast<int>(base + offset(i, true)));
    }
  }
  return groups;
}

GroupPosition group_position(const ParallelDims& dims, std::string_view axes, int rank) {
  const std::vector<std::vector<int>> groups = group_ranks(dims, axes);
  for (size_t g = 0; g < groups.size(); ++g) {
    for (size_t i = 0; i < groups[g].size(); ++i) {
      if (groups[g][i] == rank) return {static_cast<int>(g), static_cast<int>(i)};
    }
  }
  throw ConfigError(
      ::memento::detail::concat("rank ", rank, " is outside the grid of ", dims.world(), " ranks"));
}

}  // namespace memento::parallel
