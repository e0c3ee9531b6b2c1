#include "launch/bootstrap.h"

#include <cstdlib>

#include "core/error.h"

namespace memento {
namespace {

// The integer value of environment variable `name`, or `fallback` when it is not set.
int env_int(const char* name, int fallback) {
  const char* v = std::getenv(name);
  if (v == nullptr || *v == '\0') return fallback;
  char* end = nullptr;
  const long x = std::strtol(v, &end, 10);
  MEMENTO_EXPECT(*end == '\0' && x >= 0, ConfigError, "environment: ", name,
                 " must be a non-negative integer, got '", v, "'");
  return static_cast<int>(x);
}

bool env_set(const char* name) { return std::getenv(name) != nullptr; }

}  // namespace

LaunchInfo read_launch_env() {
  LaunchInfo info;
  if (env_set("OMPI_COMM_WORLD_SIZE")) {
    info.launcher = "mpirun";
    info.under_mpi = true;
    info.rank = env_int("OMPI_COMM_WORLD_RANK", 0);
    info.world = env_int("OMPI_COMM_WORLD_SIZE", 1);
    info.local_rank = env_int("OMPI_COMM_WORLD_LOCAL_RANK", 0);
    info.local_world = env_int("OMPI_COMM_WORLD_LOCAL_SIZE", 1);
  } else if (env_set("SLURM_PROCID") && env_set("SLURM_NTASKS") && env_set("SLURM_STEP_ID")) {
    // Inside an srun step (not merely inside an allocation, where the batch script runs).
    info.launcher = "slurm";
    info.under_mpi = env_set("PMIX_RANK") || env_set("PMI_RANK") || env_set("PMI_FD");
    info.rank = env_int("SLURM_PROCID", 0);
    info.world = env_int("SLURM_NTASKS", 1);
    info.local_rank = env_int("SLURM_LOCALID", 0);
    info.local_world = env_int("SLURM_NTASKS_PER_NODE", env_int("SLURM_STEP_NUM_TASKS", 1));
  } else if (env_set("WORLD_SIZE")) {
    info.launcher = "env";
    info.rank = env_int("RANK", 0);
    info.world = env_int("WORLD_SIZE", 1);
    info.local_rank = env_int("LOCAL_RANK", 0);
    info.local_world = env_int("LOCAL_WORLD_SIZE", 1);
  } else {
    info.launcher = "single";
  }
  MEMENTO_EXPECT(info.world >= 1 && info.rank < info.world, ConfigError, "environment (",
                 info.launcher, "): rank ", info.rank, " is not below world size ", info.world);
  MEMENTO_EXPECT(info.world == 1 || info.under_mpi, ConfigError, "environment (", info.launcher,
                 "): ", info.world,
                 " ranks but no MPI launcher; start the job with mpirun or srun --mpi=pmix");
  return info;
}

}  // namespace memento
