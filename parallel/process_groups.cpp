#include "parallel/process_groups.h"

#include <string>
#include <utility>

#include "core/error.h"

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

}  // namespace memento::parallel
