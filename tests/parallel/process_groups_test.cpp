// Without mpirun: the single-rank world and its process groups.
#include "parallel/process_groups.h"

#include <gtest/gtest.h>

#include "core/error.h"
#include "core/parallel/self_communicator.h"
#include "parallel/mpi_communicator.h"

namespace memento::parallel {
namespace {

TEST(ProcessGroups, OneRankWithoutMpiHasOneRankInEveryGroup) {
  ASSERT_FALSE(MpiSession::launched_under_mpi());
  std::unique_ptr<Communicator> world = make_world_communicator();
  EXPECT_NE(dynamic_cast<SelfCommunicator*>(world.get()), nullptr);
  const ProcessGroups groups(std::move(world), ParallelDims{});
  for (Communicator* comm : {&groups.world(), &groups.tp(), &groups.cp(), &groups.dp(),
                             &groups.pp(), &groups.dp_cp(), &groups.tp_cp(), &groups.tp_pp()}) {
    EXPECT_EQ(comm->size(), 1);
    EXPECT_EQ(comm->rank(), 0);
  }
  EXPECT_EQ(groups.dp_cp().name(), "dp-cp");
  EXPECT_EQ(groups.coords(), RankCoords{});
}

TEST(ProcessGroups, DimsForMoreRanksThanTheJobThrowConfigError) {
  EXPECT_THROW(ProcessGroups(std::make_unique<SelfCommunicator>(), ParallelDims{.dp = 2}),
               ConfigError);
}

}  // namespace
}  // namespace memento::parallel
