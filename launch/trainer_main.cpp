// trainer: trains a model from a YAML config, or samples text from a checkpoint.
#include <cstdio>
#include <exception>

#include "core/log.h"
#include "launch/cli.h"
#include "launch/config.h"
#include "launch/generate.h"
#include "launch/trainer.h"
#include "memory/memory_plan.h"

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

int run(int argc, char** argv) {
  const CommandLine cl = parse_command_line(argc, argv);
  switch (cl.command) {
    case CommandLine::Command::kHelp: std::printf("%s", usage().c_str()); return 0;
    case CommandLine::Command::kSample: return run_sample(cl.sample);
    case CommandLine::Command::kTrain: break;
  }
  const Config config = load_config(cl.train.config, cl.train.overrides);
  if (cl.train.dry_run) return dry_run(config);
  Trainer trainer(config, cl.train.resume);
  trainer.run();
  return 0;
}

}  // namespace
}  // namespace memento

int main(int argc, char** argv) {
  try {
    return memento::run(argc, argv);
  } catch (const memento::Error& e) {
    std::fprintf(stderr, "trainer: error: %s\n", e.what());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "trainer: internal error: %s\n", e.what());
  }
  return 1;
}
