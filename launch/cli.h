// The trainer's command line:
//   trainer --config FILE [--set key.path=value]... [--resume[=auto-fallback]] [--dry-run]
//   trainer sample --checkpoint DIR --prompt TEXT [--tokens N] [--temperature X] [--top-k K]
//   [--seed S] trainer --version | --help | sample --help
// Every option that takes a value accepts it as the next argument or after '=' (--config=FILE).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace memento {

struct TrainArgs {
  std::string config;
  std::vector<std::string> overrides;  // "key.path=value"
  bool resume = false;                 // continue from the latest complete checkpoint
  bool resume_fallback = false;        // --resume=auto-fallback: step 0 when none verifies
  bool dry_run = false;                // print the memory plan and exit without allocating
};

struct SampleArgs {
  std::string checkpoint;  // a checkpoint directory, or a run's checkpoint root (uses latest)
  std::string prompt;
  std::string tokenizer;  // overrides the tokenizer recorded with the run
  int64_t tokens = 200;
  double temperature = 0.8;
  int64_t top_k = 40;
  uint64_t seed = 0;
};

struct CommandLine {
  enum class Command { kTrain, kSample, kHelp, kSampleHelp, kVersion } command = Command::kTrain;
  TrainArgs train;
  SampleArgs sample;
};

// Throws ConfigError naming the bad argument.
CommandLine parse_command_line(int argc, char** argv);
std::string usage();
std::string sample_usage();  // `trainer sample --help`

}  // namespace memento
