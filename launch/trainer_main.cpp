// trainer: trains a model from a YAML config, or samples text from a checkpoint.
#include <cstdio>
#include <exception>

#include <unistd.h>

#include <algorithm>
#include <memory>

#include "core/log.h"
#include "launch/bootstrap.h"
#include "launch/cli.h"
#include "launch/config.h"
#include "launch/generate.h"
#include "launch/trainer.h"
#include "launch/signals.h"
#include "memory/memory_plan.h"
#include "parallel/mpi_communicator.h"
#include "parallel/process_groups.h"

namespace memento {
namespace {

int dry_run(const Config& config) {
  const TrainConfig& t = config.train;
  const MemoryPlan plan = plan_memory(config.model, t.micro_batch, t.seq_len, 2 * sizeof(float));
  std::printf("%s\n", to_yaml(config).c_str());
  std::printf("%s\n", format_activation_list(plan.activations).c_str());
  std::printf("%s", format_memory_table(plan, detail::concat("memory plan (per rank, ",
                                                             dtype_name(config.model.dtype),
                                                             ", micro-batch ", t.micro_batch, " x ",
                                                             t.seq_len, ")"))
                        .c_str());
  std::printf("parameters: %lld (%.2fB)\n", static_cast<long long>(plan.parameter_count),
              static_cast<double>(plan.parameter_count) / 1e9);
  return 0;
}

int train(const TrainArgs& args, const LaunchInfo& launch) {
  Config config = load_config(args.config, args.overrides);
  if (args.dry_run) return dry_run(config);
  if (config.train.threads == 0 && launch.local_world > 1) {
    // Ranks on one node share its cores.
    const long cores = sysconf(_SC_NPROCESSORS_ONLN);
    config.train.threads = std::max<long>(1, cores / launch.local_world);
  }
  const parallel::ParallelDims dims{config.parallel.dp, config.parallel.tp, config.parallel.pp,
                                    config.parallel.cp};
  dims.validate(launch.world);
  dims.require_available();
  parallel::ProcessGroups groups(parallel::make_world_communicator(), dims);
  install_signal_handlers();
  Trainer trainer(config, args.resume, groups);
  trainer.run();
  return trainer.stopped() ? kExitPreempted : 0;
}

}  // namespace
}  // namespace memento

int main(int argc, char** argv) {
  using namespace memento;
  std::unique_ptr<parallel::MpiSession> mpi;
  try {
    const CommandLine cl = parse_command_line(argc, argv);
    switch (cl.command) {
      case CommandLine::Command::kHelp: std::printf("%s", usage().c_str()); return 0;
      case CommandLine::Command::kSample: return run_sample(cl.sample);
      case CommandLine::Command::kTrain: break;
    }
    const LaunchInfo launch = read_launch_env();
    if (launch.under_mpi) mpi = std::make_unique<parallel::MpiSession>(&argc, &argv);
    set_log_rank(launch.rank, launch.world);
    return train(cl.train, launch);
  } catch (const Error& e) {
    std::fprintf(stderr, "trainer: error: %s\n", e.what());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "trainer: internal error: %s\n", e.what());
  }
  // One rank failed: do not wait in MPI_Finalize for ranks that will never arrive; the launcher
  // ends the whole job when this rank exits.
  if (mpi) mpi->mark_failed();
  return 1;
}
