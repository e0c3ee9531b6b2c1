// golden_runner: trains a config for its steps and writes every step's loss and gradient norm as
// exact (hexadecimal) doubles, one line per step: "<step> <loss> <grad_norm>". Run under mpirun
// for data-parallel configs (rank 0 writes). tests/golden/golden_test.cpp compares its output
// with the sequences recorded before the seams refactor (tests/golden/README.md).
//
//   golden_runner CONFIG OUT_DIR RESULT_FILE [--resume] [--set key=value]...
#include <cstdio>
#include <cstring>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "launch/bootstrap.h"
#include "launch/config.h"
#include "launch/trainer.h"
#include "parallel/mpi_communicator.h"
#include "parallel/process_groups.h"

int main(int argc, char** argv) {
  using namespace memento;
  if (argc < 4) {
    std::fprintf(stderr,
                 "usage: golden_runner CONFIG OUT_DIR RESULT_FILE [--resume] [--set k=v]...\n");
    return 2;
  }
  std::unique_ptr<parallel::MpiSession> mpi;
  try {
    const LaunchInfo launch = read_launch_env();
    if (launch.under_mpi) mpi = std::make_unique<parallel::MpiSession>(&argc, &argv);
    std::vector<std::string> overrides = {std::string("run.out_dir=") + argv[2]};
    bool resume = false;
    for (int i = 4; i < argc; ++i) {
      if (std::strcmp(argv[i], "--resume") == 0) {
        resume = true;
      } else if (std::strcmp(argv[i], "--set") == 0 && i + 1 < argc) {
        overrides.emplace_back(argv[++i]);
      } else {
        std::fprintf(stderr, "golden_runner: unknown argument %s\n", argv[i]);
        return 2;
      }
    }
    const Config config = load_config(argv[1], overrides);
    const parallel::ParallelDims dims{config.parallel.dp, config.parallel.tp, config.parallel.pp,
                                      config.parallel.cp};
    dims.validate(launch.world);
    parallel::ProcessGroups groups(parallel::make_world_communicator(), dims);
    Trainer trainer(config, resume ? Resume::kLatest : Resume::kNo, groups);
    const std::vector<StepMetrics> steps = trainer.run();
    if (launch.rank == 0) {
      std::ofstream out(argv[3], std::ios::trunc);
      for (const StepMetrics& m : steps) {
        char line[128];
        std::snprintf(line, sizeof(line), "%lld %a %a\n", static_cast<long long>(m.step), m.loss,
                      m.grad_norm);
        out << line;
      }
      if (!out.good()) {
        std::fprintf(stderr, "golden_runner: cannot write %s\n", argv[3]);
        return 1;
      }
    }
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "golden_runner: %s\n", e.what());
  }
  if (mpi) mpi->mark_failed();
  return 1;
}
