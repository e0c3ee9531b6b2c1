// One communicator per parallel axis (ARCHITECTURE contract 5), built once from the world and the
// ParallelDims and passed down; there are no globals. With every axis at 1 each group is this
// rank alone.
#pragma once

#include <memory>

#include "core/parallel/communicator.h"
#include "core/parallel/parallel_context.h"
#include "core/parallel/parallel_dims.h"

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
  // The layers' view: this rank's tp, cp and pp groups.
  ParallelContext context() const { return ParallelContext(*tp_, *cp_, *pp_); }

  // Creates the NCCL twin of every group of more than one rank (the same ranks, for tensors on
  // the GPU), each watched with `nccl_timeout_s`. Every rank of the world calls it; calls after
  // the first do nothing. A build without CUDA has no twins.
  void create_device_twins(double nccl_timeout_s);
  // The group for tensors on the compute device: its NCCL twin where there is one, else the MPI
  // group (CPU tensors, or an axis of one rank).
  Communicator& device_dp() const { return dp_twin_ ? *dp_twin_ : *dp_; }
  Communicator& device_tp() const { return tp_twin_ ? *tp_twin_ : *tp_; }
  Communicator& device_cp() const { return cp_twin_ ? *cp_twin_ : *cp_; }
  Communicator& device_pp() const { return pp_twin_ ? *pp_twin_ : *pp_; }
  Communicator& device_dp_cp() const { return dp_cp_twin_ ? *dp_cp_twin_ : *dp_cp_; }
  const ParallelDims& dims() const { return dims_; }

 private:
  std::unique_ptr<Communicator> world_;
  ParallelDims dims_;
  RankCoords coords_;
  std::unique_ptr<Communicator> tp_, cp_, dp_, pp_, dp_cp_, tp_cp_, tp_pp_;
  // NCCL twins (null: none); declared after the groups they are built from, so freed first.
  std::unique_ptr<Communicator> tp_twin_, cp_twin_, dp_twin_, pp_twin_, dp_cp_twin_;
  bool twins_created_ = false;
};

}  // namespace memento::parallel
