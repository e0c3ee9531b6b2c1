// Launch facts from OpenMPI, Slurm or plain environment variables.
#include "launch/bootstrap.h"

#include <gtest/gtest.h>

#include <cstdlib>

#include "core/error.h"

namespace memento {
namespace {

const char* const kAll[] = {"OMPI_COMM_WORLD_SIZE",
                            "OMPI_COMM_WORLD_RANK",
                            "OMPI_COMM_WORLD_LOCAL_RANK",
                            "OMPI_COMM_WORLD_LOCAL_SIZE",
                            "SLURM_PROCID",
                            "SLURM_NTASKS",
                            "SLURM_LOCALID",
                            "SLURM_STEP_ID",
                            "SLURM_NTASKS_PER_NODE",
                            "SLURM_STEP_NUM_TASKS",
                            "PMIX_RANK",
                            "PMI_RANK",
                            "PMI_FD",
                            "WORLD_SIZE",
                            "RANK",
                            "LOCAL_RANK",
                            "LOCAL_WORLD_SIZE"};

class BootstrapTest : public ::testing::Test {
 protected:
  void SetUp() override {
    for (const char* name : kAll) unsetenv(name);
  }
  void TearDown() override { SetUp(); }
};

TEST_F(BootstrapTest, NothingSetIsASingleProcess) {
  const LaunchInfo info = read_launch_env();
  EXPECT_EQ(info.launcher, "single");
  EXPECT_EQ(info.rank, 0);
  EXPECT_EQ(info.world, 1);
  EXPECT_FALSE(info.under_mpi);
}

TEST_F(BootstrapTest, OpenMpi) {
  setenv("OMPI_COMM_WORLD_SIZE", "8", 1);
  setenv("OMPI_COMM_WORLD_RANK", "5", 1);
  setenv("OMPI_COMM_WORLD_LOCAL_RANK", "1", 1);
  setenv("OMPI_COMM_WORLD_LOCAL_SIZE", "4", 1);
  const LaunchInfo info = read_launch_env();
  EXPECT_EQ(info.launcher, "mpirun");
  EXPECT_EQ(info.rank, 5);
  EXPECT_EQ(info.world, 8);
  EXPECT_EQ(info.local_rank, 1);
  EXPECT_EQ(info.local_world, 4);
  EXPECT_TRUE(info.under_mpi);
}

TEST_F(BootstrapTest, SlurmStepWithPmix) {
  setenv("SLURM_PROCID", "3", 1);
  setenv("SLURM_NTASKS", "4", 1);
  setenv("SLURM_LOCALID", "1", 1);
  setenv("SLURM_STEP_ID", "0", 1);
  setenv("SLURM_STEP_NUM_TASKS", "4", 1);
  setenv("PMIX_RANK", "3", 1);
  const LaunchInfo info = read_launch_env();
  EXPECT_EQ(info.launcher, "slurm");
  EXPECT_EQ(info.rank, 3);
  EXPECT_EQ(info.world, 4);
  EXPECT_EQ(info.local_rank, 1);
  EXPECT_TRUE(info.under_mpi);
}

TEST_F(BootstrapTest, SlurmBatchScriptWithoutAStepIsNotARank) {
  setenv("SLURM_PROCID", "0", 1);
  setenv("SLURM_NTASKS", "4", 1);  // the allocation, seen from the batch script
  EXPECT_EQ(read_launch_env().launcher, "single");
}

TEST_F(BootstrapTest, PlainEnvironmentWithoutMpiLauncherIsRefusedForSeveralRanks) {
  setenv("WORLD_SIZE", "2", 1);
  setenv("RANK", "0", 1);
  try {
    read_launch_env();
    FAIL() << "two ranks without an MPI launcher must be refused";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("mpirun or srun"), std::string::npos) << e.what();
  }
  setenv("WORLD_SIZE", "1", 1);
  EXPECT_EQ(read_launch_env().launcher, "env");
}

TEST_F(BootstrapTest, BadValuesNameTheVariable) {
  setenv("OMPI_COMM_WORLD_SIZE", "two", 1);
  try {
    read_launch_env();
    FAIL();
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("OMPI_COMM_WORLD_SIZE"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace memento
