#include "launch/cli.h"

#include <string_view>

#include "core/error.h"

namespace memento {
namespace {

class Args {
 public:
  Args(int argc, char** argv) : argc_(argc), argv_(argv) {}
  bool done() const { return i_ >= argc_; }
  std::string_view next() { return argv_[i_++]; }
  std::string value(std::string_view flag) {
    MEMENTO_EXPECT(!done(), ConfigError, "command line: ", flag, " needs a value");
    return argv_[i_++];
  }

 private:
  int argc_;
  char** argv_;
  int i_ = 1;
};

int64_t to_int(const std::string& s, std::string_view flag) {
  try {
    size_t used = 0;
    const int64_t v = std::stoll(s, &used);
    if (used == s.size()) return v;
  } catch (const std::exception&) {
  }
  throw ConfigError(detail::concat("command line: ", flag, ": expected an integer, got '", s, "'"));
}

double to_double(const std::string& s, std::string_view flag) {
  try {
    size_t used = 0;
    const double v = std::stod(s, &used);
    if (used == s.size()) return v;
  } catch (const std::exception&) {
  }
  throw ConfigError(detail::concat("command line: ", flag, ": expected a number, got '", s, "'"));
}

}  // namespace

std::string usage() {
  return "usage:\n"
         "  trainer --config FILE [--set key.path=value]... [--resume] [--dry-run]\n"
         "  trainer sample --checkpoint DIR --prompt TEXT [--tokens N] [--temperature X]\n"
         "                 [--top-k K] [--seed S] [--tokenizer FILE]\n"
         "\n"
         "  --config FILE       YAML recipe (see configs/ and README.md for every key)\n"
         "  --set key=value     override one key, e.g. --set train.steps=100 (repeatable)\n"
         "  --resume            continue from the latest complete checkpoint of the run\n"
         "  --dry-run           print the memory plan and the activation list, allocate nothing\n";
}

CommandLine parse_command_line(int argc, char** argv) {
  CommandLine cl;
  Args args(argc, argv);
  if (!args.done() && std::string_view(argv[1]) == "sample") {
    cl.command = CommandLine::Command::kSample;
    args.next();
  }
  while (!args.done()) {
    const std::string_view flag = args.next();
    if (flag == "--help" || flag == "-h") {
      cl.command = CommandLine::Command::kHelp;
      return cl;
    }
    if (cl.command == CommandLine::Command::kSample) {
      SampleArgs& s = cl.sample;
      if (flag == "--checkpoint") s.checkpoint = args.value(flag);
      else if (flag == "--prompt") s.prompt = args.value(flag);
      else if (flag == "--tokenizer") s.tokenizer = args.value(flag);
      else if (flag == "--tokens") s.tokens = to_int(args.value(flag), flag);
      else if (flag == "--temperature") s.temperature = to_double(args.value(flag), flag);
      else if (flag == "--top-k") s.top_k = to_int(args.value(flag), flag);
      else if (flag == "--seed") s.seed = static_cast<uint64_t>(to_int(args.value(flag), flag));
      else throw ConfigError(detail::concat("command line: unknown option '", flag, "' for sample"));
    } else {
      TrainArgs& t = cl.train;
      if (flag == "--config") t.config = args.value(flag);
      else if (flag == "--set") t.overrides.push_back(args.value(flag));
      else if (flag == "--resume") t.resume = true;
      else if (flag == "--dry-run") t.dry_run = true;
      else throw ConfigError(detail::concat("command line: unknown option '", flag, "'"));
    }
  }
  if (cl.command == CommandLine::Command::kSample) {
    MEMENTO_EXPECT(!cl.sample.checkpoint.empty(), ConfigError,
                   "command line: sample needs --checkpoint DIR");
    MEMENTO_EXPECT(cl.sample.tokens > 0, ConfigError, "command line: --tokens must be positive");
    MEMENTO_EXPECT(cl.sample.temperature >= 0, ConfigError,
                   "command line: --temperature must be >= 0");
  } else {
    MEMENTO_EXPECT(!cl.train.config.empty(), ConfigError, "command line: --config FILE is required");
  }
  return cl;
}

}  // namespace memento
