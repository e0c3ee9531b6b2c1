// trainer: trains a model from a YAML config, or samples text from a checkpoint.
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <fstream>
#include <memory>

#include "core/host_memory.h"
#include "core/log.h"
#include "launch/bootstrap.h"
#include "launch/cli.h"
#include "launch/config.h"
#include "launch/generate.h"
#include "launch/run_plan.h"
#include "launch/signals.h"
#include "launch/trainer.h"
#include "launch/version.h"
#include "parallel/mpi_communicator.h"
#include "parallel/process_groups.h"

namespace memento {
namespace {

// The memory plan first, the parameter count, the resolved config; the saved activations (one
// row per tensor, hundreds for a large model) go to <run.out_dir>/activations.txt.
int dry_run(const Config& config) {
  const RunPlan plan = plan_run(config, config.model.device);
  std::printf("%s", format_run_plan(plan).c_str());
  namespace fs = std::filesystem;
  const fs::path list = fs::path(config.run.out_dir) / "activations.txt";
  std::error_code error;
  fs::create_directories(list.parent_path(), error);
  std::ofstream out(list);
  out << format_activation_list(plan.memory.activations);
  out.close();
  if (out.good()) {
    std::printf("%zu saved activations per micro-batch: %s\n", plan.memory.activations.size(),
                list.c_str());
  } else {
    std::printf("%zu saved activations per micro-batch (cannot write %s)\n",
                plan.memory.activations.size(), list.c_str());
  }
  check_memory_budget(config, plan.memory);
  std::printf("\nresolved config:\n%s", to_yaml(config).c_str());
  return 0;
}

// OpenMP threads that spin at barriers take the cores from any other process (a data loader, a
// second job, `trainer sample` next to a run): 5x slower steps on a shared machine. libgomp reads
// OMP_WAIT_POLICY when it loads, before main, so without one the trainer sets "passive" and
// executes itself again. A policy the user set is kept.
void default_to_passive_openmp(char** argv) {
  if (std::getenv("OMP_WAIT_POLICY") != nullptr) return;
  setenv("OMP_WAIT_POLICY", "passive", 1);
  setenv("MEMENTO_OMP_WAIT_POLICY_DEFAULTED", "1", 1);
  execv("/proc/self/exe", argv);
  // Still here: exec failed, and this process's OpenMP keeps its default (spinning).
  unsetenv("MEMENTO_OMP_WAIT_POLICY_DEFAULTED");
}

std::string openmp_wait_line() {
  const char* policy = std::getenv("OMP_WAIT_POLICY");
  if (std::getenv("MEMENTO_OMP_WAIT_POLICY_DEFAULTED") != nullptr)
    return "OpenMP threads wait passively (OMP_WAIT_POLICY=passive, the default; set "
           "OMP_WAIT_POLICY=active to spin on a dedicated machine)";
  if (policy != nullptr) return detail::concat("OpenMP wait policy ", policy, " (OMP_WAIT_POLICY)");
  return "OpenMP threads spin at barriers (could not set OMP_WAIT_POLICY=passive)";
}

int train(const TrainArgs& args, const LaunchInfo& launch) {
  Config config = load_config(args.config, args.overrides);
  if (!args.dry_run) {
    MEMENTO_LOG_INFO(build_and_host_line(), ", ", launch.launcher, " rank ", launch.rank, " of ",
                     launch.world);
    MEMENTO_LOG_INFO(openmp_wait_line());
  }
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
  const Resume resume = !args.resume           ? Resume::kNo
                        : args.resume_fallback ? Resume::kLatestOrScratch
                                               : Resume::kLatest;
  Trainer trainer(config, resume, groups);
  trainer.run();
  return trainer.stopped() ? kExitPreempted : 0;
}

}  // namespace
}  // namespace memento

int main(int argc, char** argv) {
  using namespace memento;
  default_to_passive_openmp(argv);
  configure_host_allocator();  // before any thread starts (core/host_memory.h)
  std::unique_ptr<parallel::MpiSession> mpi;
  try {
    const CommandLine cl = parse_command_line(argc, argv);
    switch (cl.command) {
      case CommandLine::Command::kHelp:
        std::printf("%s", usage().c_str());
        return 0;
      case CommandLine::Command::kSampleHelp:
        std::printf("%s", sample_usage().c_str());
        return 0;
      case CommandLine::Command::kVersion:
        std::printf("%s\n", version_string().c_str());
        return 0;
      case CommandLine::Command::kSample:
        return run_sample(cl.sample);
      case CommandLine::Command::kTrain:
        break;
    }
    const LaunchInfo launch = read_launch_env();
    // Before MPI_Init, which keeps handlers installed before it: a stop signal that arrives while
    // the job starts is then a stop request, not the end of the rank.
    if (!cl.train.dry_run) install_signal_handlers();
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
