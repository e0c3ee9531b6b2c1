// One communicator per parallel axis (ARCHITECTURE contract 5), built once from the world and the
// ParallelDims and passed down; there are no globals. With every axis at 1 each group is this
// rank alone.
#pragma once

#include <memory>

#include "parallel/communicator.h"
#include "parallel/parallel_dims.h"

namespace memento::parallel {

class ProcessGroups {
 public:
  // Validates dims against world->size() (ConfigError), then splits the world into the groups of
  // group_ranks() for each axis. Every rank of the world must call it.
  ProcessGroups(std::unique_ptr<Communicator> world, const ParallelDims& dims);

  Communicator& world() const { return *world_; }
  Communicator& tp() const { return *tp_; }
  Communicator& cp() const { return *cp_; }
  Communicator& dp() const { return *dp_; }
  Communicator& pp() const { return *pp_; }
  Communicator& dp_cp() const { return *dp_cp_; }  // weight-gradient reduction
  Communicator& tp_cp() const { return *tp_cp_; }
  Communicator& tp_pp() const { return *tp_pp_; }  // model parallel
  const RankCoords& coords() const { return coords_; }
  const ParallelDims& dims() const { return dims_; }

 private:
  std::unique_ptr<Communicator> world_;
  ParallelDims dims_;
  RankCoords coords_;
  std::unique_ptr<Communicator> tp_, cp_, dp_, pp_, dp_cp_, tp_cp_, tp_pp_;
};

}  // namespace memento::parallel
