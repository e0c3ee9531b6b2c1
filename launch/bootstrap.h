// Launch facts from the environment, read in this one place: rank, world size and local rank
// under OpenMPI's mpirun, under Slurm's srun, or from plain RANK / WORLD_SIZE / LOCAL_RANK.
#pragma once

#include <string>

namespace memento {

struct LaunchInfo {
  int rank = 0;
  int world = 1;
  int local_rank = 0;
  int local_world = 1;     // ranks on this node
  std::string launcher;    // "mpirun", "slurm", "env" or "single"
  bool under_mpi = false;  // an MPI launcher started us: MPI_Init will find the other ranks
};

LaunchInfo read_launch_env();

}  // namespace memento
