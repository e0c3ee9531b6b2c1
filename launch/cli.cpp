#include "launch/cli.h"

#include <initializer_list>
#include <optional>
#include <string_view>
#include <utility>

#include "core/error.h"

namespace memento {
namespace {

// The arguments after argv[0]; "--flag=value" splits into the flag and its value.
class Args {
 public:
  Args(int argc, char** argv) : argc_(argc), argv_(argv) {}
  bool done() const { return i_ >= argc_ && !inline_value_; }
  std::string_view next() {
    const std::string_view arg = argv_[i_++];
    const size_t eq = arg.find('=');
    if (arg.starts_with("--") && eq != std::string_view::npos) {
      inline_value_ = std::string(arg.substr(eq + 1));
      return arg.substr(0, eq);
    }
    return arg;
  }
  // The value of the flag just read: after its '=', or the next argument.
  std::string value(std::string_view flag) {
    if (inline_value_) return *std::exchange(inline_value_, std::nullopt);
    MEMENTO_EXPECT(i_ < argc_, ConfigError, "command line: ", flag, " needs a value");
    return argv_[i_++];
  }
  // The flag just read took no value: one given with '=' is an error, unless `allowed` names it.
  std::optional<std::string> optional_value(std::string_view flag,
                                            std::initializer_list<std::string_view> allowed) {
    if (!inline_value_) return std::nullopt;
    const std::string v = *std::exchange(inline_value_, std::nullopt);
    for (std::string_view a : allowed)
      if (v == a) return v;
    std::string list;
    for (std::string_view a : allowed) list += (list.empty() ? "'" : ", '") + std::string(a) + "'";
    throw ConfigError(detail::concat("command line: ", flag, "=", v, ": ",
                                     allowed.size() ? "expected " + list : "takes no value"));
  }

 private:
  int argc_;
  char** argv_;
  int i_ = 1;
  std::optional<std::string> inline_value_;
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
         "  trainer --config FILE [--set key.path=value]... [--resume[=auto-fallback]]\n"
         "          [--init-from-hf DIR] [--dry-run]\n"
         "  trainer sample --checkpoint DIR --prompt TEXT [options]   (trainer sample --help)\n"
         "  trainer --version\n"
         "\n"
         "  --config FILE       YAML recipe (see configs/ and README.md for every key)\n"
         "  --set key=value     override one key, e.g. --set train.steps=100 (repeatable)\n"
         "  --resume            continue from the newest checkpoint of the run that verifies; "
         "each\n"
         "                      one skipped is logged with why; an error when checkpoints exist\n"
         "                      but none verifies, step 0 when there are none yet\n"
         "  --resume=auto-fallback\n"
         "                      the same, but start from step 0 (with a warning) when none "
         "verifies\n"
         "  --init-from-hf DIR  start from a Hugging Face model directory's weights (config.json,\n"
         "                      model.safetensors); the same as --set checkpoint.init_from_hf=DIR\n"
         "  --dry-run           print the memory plan of one rank, allocate nothing; the saved\n"
         "                      activations go to <run.out_dir>/activations.txt\n"
         "  --version           print the version and the commit it was built from\n"
         "Options take their value as the next argument or after '=' (--config=FILE).\n";
}

std::string sample_usage() {
  return "usage: trainer sample --checkpoint DIR --prompt TEXT [--tokens N] [--temperature X]\n"
         "                      [--top-k K] [--seed S] [--tokenizer FILE]\n"
         "\n"
         "Generates text from a trained model on the CPU, continuing PROMPT.\n"
         "\n"
         "  --checkpoint DIR    a checkpoint directory (step_...), or a run's checkpoint root\n"
         "                      (its newest complete checkpoint)\n"
         "  --prompt TEXT       the text to continue\n"
         "  --tokens N          tokens to generate (default 200)\n"
         "  --temperature X     softmax temperature; 0 picks the most likely token (default 0.8)\n"
         "  --top-k K           sample among the K most likely tokens; 0 all (default 40)\n"
         "  --seed S            the sampling seed (default 0): the same seed, the same text\n"
         "  --tokenizer FILE    decode with FILE instead of the tokenizer stored with the run\n";
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
      cl.command = cl.command == CommandLine::Command::kSample ? CommandLine::Command::kSampleHelp
                                                               : CommandLine::Command::kHelp;
      return cl;
    }
    if (flag == "--version") {
      cl.command = CommandLine::Command::kVersion;
      return cl;
    }
    if (cl.command == CommandLine::Command::kSample) {
      SampleArgs& s = cl.sample;
      if (flag == "--checkpoint")
        s.checkpoint = args.value(flag);
      else if (flag == "--prompt")
        s.prompt = args.value(flag);
      else if (flag == "--tokenizer")
        s.tokenizer = args.value(flag);
      else if (flag == "--tokens")
        s.tokens = to_int(args.value(flag), flag);
      else if (flag == "--temperature")
        s.temperature = to_double(args.value(flag), flag);
      else if (flag == "--top-k")
        s.top_k = to_int(args.value(flag), flag);
      else if (flag == "--seed")
        s.seed = static_cast<uint64_t>(to_int(args.value(flag), flag));
      else
        throw ConfigError(detail::concat("command line: unknown option '", flag,
                                         "' for sample (see trainer sample --help)"));
    } else {
      TrainArgs& t = cl.train;
      if (flag == "--config") {
        t.config = args.value(flag);
      } else if (flag == "--set") {
        t.overrides.push_back(args.value(flag));
      } else if (flag == "--resume") {
        t.resume = true;
        t.resume_fallback = args.optional_value(flag, {"auto-fallback"}).has_value();
      } else if (flag == "--init-from-hf") {
        t.overrides.push_back("checkpoint.init_from_hf=" + args.value(flag));
      } else if (flag == "--dry-run") {
        args.optional_value(flag, {});
        t.dry_run = true;
      } else {
        throw ConfigError(
            detail::concat("command line: unknown option '", flag, "' (see trainer --help)"));
      }
    }
  }
  if (cl.command == CommandLine::Command::kSample) {
    MEMENTO_EXPECT(!cl.sample.checkpoint.empty(), ConfigError,
                   "command line: sample needs --checkpoint DIR");
    MEMENTO_EXPECT(cl.sample.tokens > 0, ConfigError, "command line: --tokens must be positive");
    MEMENTO_EXPECT(cl.sample.temperature >= 0, ConfigError,
                   "command line: --temperature must be >= 0");
  } else {
    MEMENTO_EXPECT(!cl.train.config.empty(), ConfigError,
                   "command line: --config FILE is required");
  }
  return cl;
}

}  // namespace memento
