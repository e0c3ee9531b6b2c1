#include "parallel/process_groups.h"

#include <string>
#include <utility>

#include "core/error.h"
#ifdef MEMENTO_WITH_CUDA
#include "parallel/nccl_communicator.h"
#endif

namespace memento::parallel {
namespace {

// MPI_Comm_split semantics: color = the group's index, key = the rank's place in the group.
std::unique_ptr<Communicator> split_axis(Communicator& world, const ParallelDims& dims,
                                         const char* axes) {
  const GroupPosition position = group_position(dims, axes, world.rank());
  std::unique_ptr<Communicator> group = world.split(position.group, position.index, axes);
  MEMENTO_CHECK(group != nullptr && group->rank() == position.index, "split into '", axes,
                "' gave rank ", group ? group->rank() : -1, ", expected ", position.index);
  return group;
}

}  // namespace

ProcessGroups::ProcessGroups(std::unique_ptr<Communicator> world, const ParallelDims& dims)
    : world_(std::move(world)), dims_(dims) {
  MEMENTO_CHECK(world_ != nullptr, "ProcessGroups needs a world communicator");
  dims_.validate(world_->size());
  coords_ = coords_of(dims_, world_->rank());
  // The same order on every rank: each split is a collective over the world.
  tp_ = split_axis(*world_, dims_, "tp");
  cp_ = split_axis(*world_, dims_, "cp");
  dp_ = split_axis(*world_, dims_, "dp");
  pp_ = split_axis(*world_, dims_, "pp");
  dp_cp_ = split_axis(*world_, dims_, "dp-cp");
  tp_cp_ = split_axis(*world_, dims_, "tp-cp");
  tp_pp_ = split_axis(*world_, dims_, "tp-pp");
}

void ProcessGroups::create_device_twins([[maybe_unused]] double nccl_timeout_s) {
  if (twins_created_) return;  // several trainers of one job (tests) share the twins
  twins_created_ = true;
#ifdef MEMENTO_WITH_CUDA
  // The same order on every rank: creating an NCCL communicator is a collective over its group
  // (its unique id travels over the MPI group), and a group of one rank needs none.
  const auto twin = [&](Communicator& group, const char* name) {
    return group.size() > 1 ? make_nccl_communicator(group, name, nccl_timeout_s) : nullptr;
  };
  tp_twin_ = twin(*tp_, "tp");
  cp_twin_ = twin(*cp_, "cp");
  dp_twin_ = twin(*dp_, "dp");
  pp_twin_ = twin(*pp_, "pp");
  dp_cp_twin_ = twin(*dp_cp_, "dp-cp");
#endif
}

}  // namespace memento::parallel
