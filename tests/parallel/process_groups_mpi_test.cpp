// ProcessGroups on 2 and 4 ranks: each axis's communicator holds exactly the world ranks of
// group_ranks() (checked against literal tables in parallel_dims_test), in the same order.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "core/error.h"
#include "core/tensor.h"
#include "parallel/mpi_communicator.h"
#include "parallel/process_groups.h"

namespace memento::parallel {
namespace {

// The world ranks of `group`'s members, in the group's rank order.
std::vector<int> members(Communicator& group, int world_rank) {
  Tensor me = Tensor::empty({1}, DType::kI32);
  me.data<int32_t>()[0] = world_rank;
  Tensor all = Tensor::empty({group.size()}, DType::kI32);
  group.all_gather(me, all);
  return std::vector<int>(all.data<int32_t>(), all.data<int32_t>() + group.size());
}

std::string layout(const ParallelDims& d) {
  return "dp=" + std::to_string(d.dp) + " tp=" + std::to_string(d.tp) +
         " pp=" + std::to_string(d.pp) + " cp=" + std::to_string(d.cp);
}

TEST(ProcessGroups, EveryAxisCommunicatorHoldsItsGroupRanks) {
  const int world_size = make_world_communicator()->size();
  const std::vector<ParallelDims> layouts = {
      {.dp = world_size}, {.tp = world_size}, {.pp = world_size}, {.cp = world_size},
      {.dp = 2, .tp = 2}, {.tp = 2, .pp = 2}, {.dp = 2, .cp = 2}, {.pp = 2, .cp = 2},  // 4 ranks
  };
  int tested = 0;
  for (const ParallelDims& dims : layouts) {
    if (dims.world() != world_size) continue;
    ++tested;
    const ProcessGroups groups(make_world_communicator(), dims);
    const int rank = groups.world().rank();
    EXPECT_EQ(groups.coords(), coords_of(dims, rank)) << layout(dims);
    EXPECT_EQ(groups.dims().world(), dims.world());
    const std::pair<const char*, Communicator*> axes[] = {
        {"tp", &groups.tp()},       {"cp", &groups.cp()},       {"dp", &groups.dp()},
        {"pp", &groups.pp()},       {"dp-cp", &groups.dp_cp()}, {"tp-cp", &groups.tp_cp()},
        {"tp-pp", &groups.tp_pp()},
    };
    for (const auto& [token, comm] : axes) {
      const GroupPosition position = group_position(dims, token, rank);
      const std::vector<int> expected = group_ranks(dims, token)[position.group];
      EXPECT_EQ(comm->name(), token);
      EXPECT_EQ(comm->rank(), position.index) << layout(dims) << " " << token;
      EXPECT_EQ(members(*comm, rank), expected) << layout(dims) << " " << token;
    }
  }
  EXPECT_GT(tested, 0) << "no layout for " << world_size << " ranks";
}

TEST(ProcessGroups, GradientReductionOverDpCpSumsItsMembers) {
  const int world_size = make_world_communicator()->size();
  const ParallelDims dims =
      world_size == 4 ? ParallelDims{.dp = 2, .cp = 2} : ParallelDims{.dp = world_size};
  const ProcessGroups groups(make_world_communicator(), dims);
  Tensor grad = Tensor::empty({2}, DType::kF32);
  grad.data<float>()[0] = static_cast<float>(groups.world().rank());
  grad.data<float>()[1] = 1.0f;
  groups.dp_cp().all_reduce(grad);
  EXPECT_EQ(grad.data<float>()[0], static_cast<float>(world_size * (world_size - 1) / 2));
  EXPECT_EQ(grad.data<float>()[1], static_cast<float>(world_size));
}

TEST(ProcessGroups, DimsThatDoNotMatchTheWorldThrowConfigError) {
  const int world_size = make_world_communicator()->size();
  EXPECT_THROW(ProcessGroups(make_world_communicator(), ParallelDims{.dp = world_size + 1}),
               ConfigError);
}

}  // namespace
}  // namespace memento::parallel
