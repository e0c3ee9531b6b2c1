// Helpers for end-to-end tests: scratch directories, small token files of real text, configs.
#pragma once

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "core/data/token_dataset.h"

namespace memento::testing {

namespace fs = std::filesystem;

// A fresh directory under the build tree, removed first if a previous run left it.
inline std::string scratch_dir(const std::string& name) {
  const fs::path dir = fs::path(MEMENTO_BINARY_DIR) / "test-scratch" / name;
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir.string();
}

// Real English text that nobody here wrote: the fortunes database shipped by Debian's
// `fortunes` packages (scripts/install_deps.sh installs it), read as bytes.
inline std::string fortunes_text(size_t max_bytes) {
  std::string text;
  for (const char* name : {"fortunes", "literature", "science", "wisdom", "people"}) {
    std::ifstream in(fs::path("/usr/share/games/fortunes") / name, std::ios::binary);
    text.append(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
    if (text.size() >= max_bytes) break;
  }
  if (text.size() > max_bytes) text.resize(max_bytes);
  return text;
}

// Writes `text` as byte tokens (vocabulary 256) into an llm.c shard.
inline void write_byte_tokens(const std::string& path, const std::string& text) {
  std::vector<uint16_t> tokens(text.begin(), text.end());
  for (auto& t : tokens) t = static_cast<uint16_t>(static_cast<unsigned char>(t));
  write_llmc_shard(path, tokens);
}

// dir/train.bin and dir/val.bin: 18,000 and 2,000 bytes of fortunes as byte tokens.
inline void write_fortunes_corpus(const std::string& dir) {
  const std::string text = fortunes_text(20000);
  write_byte_tokens(dir + "/train.bin", text.substr(0, 18000));
  write_byte_tokens(dir + "/val.bin", text.substr(18000));
}

inline std::string trainer_binary() { return std::string(MEMENTO_BINARY_DIR) + "/bin/trainer"; }

// Runs a shell command; returns its exit code and its stdout (add 2>&1 to capture stderr).
struct CommandResult {
  int exit_code;
  std::string output;
};
inline CommandResult run_command(const std::string& command) {
  CommandResult r{-1, ""};
  FILE* pipe = popen(command.c_str(), "r");
  if (!pipe) return r;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof(buf), pipe)) > 0) r.output.append(buf, n);
  const int status = pclose(pipe);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return r;
}

// Starts argv[0] (searched in PATH) with its stdout and stderr appended to `log`; returns the pid.
// With own_group, in a process group of its own, as a shell starts a foreground job.
inline pid_t spawn(const std::vector<std::string>& args, const std::string& log,
                   bool own_group = false) {
  const pid_t pid = fork();
  if (pid == 0) {
    if (own_group) setpgid(0, 0);
    std::vector<char*> argv;
    for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    const int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    dup2(fd, STDOUT_FILENO);
    dup2(fd, STDERR_FILENO);
    execvp(argv[0], argv.data());
    _exit(127);
  }
  if (own_group) setpgid(pid, pid);  // here too: a signal sent next must not race the child's call
  return pid;
}

// The pids of `parent`'s children (pgrep -P).
inline std::vector<pid_t> children_of(pid_t parent) {
  std::vector<pid_t> pids;
  const auto r = run_command("pgrep -P " + std::to_string(parent));
  std::istringstream in(r.output);
  for (pid_t p; in >> p;) pids.push_back(p);
  return pids;
}

// Waits for `pid`; its exit code, or 128 + signal.
inline int wait_exit_code(pid_t pid) {
  int status = 0;
  waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

// mpirun as root on an oversubscribed machine, with ranks that do not spin on idle cores.
inline std::vector<std::string> mpirun(int np) {
  return {
      MEMENTO_MPIEXEC, "--oversubscribe", "--allow-run-as-root", "-x", "OMP_WAIT_POLICY=passive",
      "-np",           std::to_string(np)};
}

inline std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

}  // namespace memento::testing
