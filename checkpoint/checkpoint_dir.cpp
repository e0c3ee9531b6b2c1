#include "checkpoint/checkpoint_dir.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <system_error>
#include <utility>

#include "core/error.h"

namespace memento::checkpoint {
namespace fs = std::filesystem;
namespace {

constexpr std::string_view kStepPrefix = "step_";
constexpr size_t kMaxStepDigits = 18;         // fits int64
constexpr size_t kMaxLatestFileBytes = 4096;  // "latest" holds one short name

[[noreturn]] void throw_errno(const std::string& what, const std::string& path, int error) {
  throw CheckpointError(what + " " + path + ": " + std::strerror(error));
}

// A file descriptor closed on scope exit.
class Fd {
 public:
  explicit Fd(int fd) : fd_(fd) {}
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  int get() const { return fd_; }
  int release() { return std::exchange(fd_, -1); }

 private:
  int fd_;
};

void fsync_path(const std::string& path, int flags, const char* what) {
  Fd fd(::open(path.c_str(), flags | O_CLOEXEC));
  if (fd.get() < 0) throw_errno(std::string("cannot open ") + what, path, errno);
  if (::fsync(fd.get()) != 0) throw_errno(std::string("cannot fsync ") + what, path, errno);
}

std::string parent_of(const std::string& path) {
  const fs::path parent = fs::path(path).parent_path();
  return parent.empty() ? std::string(".") : parent.string();
}

// "<parent>/.<name><suffix>.<pid>": hidden, unique to this process, ignored by every reader.
std::string hidden_sibling(const std::string& path, std::string_view suffix) {
  const std::string name = fs::path(path).filename().string();
  return join_path(parent_of(path),
                   "." + name + std::string(suffix) + "." + std::to_string(::getpid()));
}

void rename_or_throw(const std::string& from, const std::string& to) {
  if (std::rename(from.c_str(), to.c_str()) != 0)
    throw_errno("cannot rename " + from + " to", to, errno);
}

}  // namespace

std::string step_dir_name(int64_t step) {
  char name[40];
  std::snprintf(name, sizeof(name), "step_%09lld", static_cast<long long>(step));
  return name;
}

std::string rank_file_name(int rank) {
  char name[32];
  std::snprintf(name, sizeof(name), "rank_%05d.h5", rank);
  return name;
}

std::optional<int64_t> parse_step_dir_name(std::string_view name) {
  if (!name.starts_with(kStepPrefix)) return std::nullopt;
  const std::string_view digits = name.substr(kStepPrefix.size());
  if (digits.empty() || digits.size() > kMaxStepDigits) return std::nullopt;
  int64_t step = 0;
  for (char c : digits) {
    if (c < '0' || c > '9') return std::nullopt;
    step = step * 10 + (c - '0');
  }
  return step;
}

std::string join_path(const std::string& dir, std::string_view name) {
  if (dir.empty()) return std::string(name);
  return dir.back() == '/' ? dir + std::string(name) : dir + "/" + std::string(name);
}

void fsync_file(const std::string& path) { fsync_path(path, O_RDONLY, "file"); }

void fsync_dir(const std::string& path) { fsync_path(path, O_RDONLY | O_DIRECTORY, "directory"); }

void publish_directory(const std::string& tmp, const std::string& final_dir) {
  const std::string parent = parent_of(final_dir);
  if (std::rename(tmp.c_str(), final_dir.c_str()) != 0) {
    if (errno != ENOTEMPTY && errno != EEXIST) {
      throw_errno("cannot rename " + tmp + " to", final_dir, errno);
    }
    // A re-save of the same step. The exchange keeps a complete final_dir at every instant; tmp
    // then holds the old copy, which no reader looks at.
    if (::renameat2(AT_FDCWD, tmp.c_str(), AT_FDCWD, final_dir.c_str(), RENAME_EXCHANGE) != 0) {
      if (errno != EINVAL && errno != ENOSYS && errno != ENOTSUP) {
        throw_errno("cannot exchange " + tmp + " with", final_dir, errno);
      }
      // The filesystem cannot exchange: move the old copy aside first. A crash in between
      // leaves no final_dir, and readers fall back to the previous step.
      const std::string aside = hidden_sibling(final_dir, ".old");
      rename_or_throw(final_dir, aside);
      rename_or_throw(tmp, final_dir);
      fsync_dir(parent);
      std::error_code ignored;
      fs::remove_all(aside, ignored);
      return;
    }
    fsync_dir(parent);
    std::error_code ignored;
    fs::remove_all(tmp, ignored);
  }
  fsync_dir(parent);
}

void write_file_atomic(const std::string& path, std::string_view contents,
                       void (*before_rename)()) {
  const std::string tmp = hidden_sibling(path, ".tmp");
  {
    Fd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
    if (fd.get() < 0) throw_errno("cannot create", tmp, errno);
    for (size_t done = 0; done < contents.size();) {
      const ssize_t n = ::write(fd.get(), contents.data() + done, contents.size() - done);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) throw_errno("cannot write", tmp, errno);
      done += static_cast<size_t>(n);
    }
    if (::fsync(fd.get()) != 0) throw_errno("cannot fsync", tmp, errno);
    if (::close(fd.release()) != 0) throw_errno("cannot close", tmp, errno);
  }
  if (before_rename != nullptr) before_rename();
  rename_or_throw(tmp, path);
  fsync_dir(parent_of(path));
}

std::optional<std::string> read_latest_pointer(const std::string& root) {
  const std::string path = join_path(root, kLatestFileName);
  Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (fd.get() < 0) return std::nullopt;
  char buffer[kMaxLatestFileBytes];
  const ssize_t n = ::read(fd.get(), buffer, sizeof(buffer));
  if (n <= 0) return std::nullopt;
  std::string_view text(buffer, static_cast<size_t>(n));
  while (!text.empty() && (text.back() == '\n' || text.back() == ' ' || text.back() == '\r')) {
    text.remove_suffix(1);
  }
  if (!parse_step_dir_name(text)) return std::nullopt;
  return std::string(text);
}

void remove_directory_safely(const std::string& dir) {
  std::error_code error;
  if (!fs::exists(dir, error)) return;
  const std::string hidden = hidden_sibling(dir, ".deleting");
  rename_or_throw(dir, hidden);
  fsync_dir(parent_of(dir));
  fs::remove_all(hidden, error);
  MEMENTO_EXPECT(!error, CheckpointError, "cannot remove ", hidden, ": ", error.message());
}

std::vector<std::string> remove_stale_temporaries(const std::string& root) {
  std::vector<std::string> removed;
  std::error_code error;
  for (const auto& item : fs::directory_iterator(root, error)) {
    const std::string name = item.path().filename().string();
    const std::string_view n = name;
    const bool step_temporary =
        n.starts_with(".") && n.substr(1).starts_with(kStepPrefix) &&
        (n.find(".tmp") != n.npos || n.find(".deleting.") != n.npos || n.find(".old.") != n.npos);
    const bool latest_temporary = n.starts_with(".") && n.substr(1).starts_with(kLatestFileName) &&
                                  n.substr(1 + kLatestFileName.size()).starts_with(".tmp.");
    const bool ours = step_temporary || latest_temporary;
    if (ours) removed.push_back(item.path().string());
  }
  for (const std::string& path : removed) {
    fs::remove_all(path, error);
    MEMENTO_EXPECT(!error, CheckpointError, "cannot remove the stale ", path, ": ",
                   error.message());
  }
  return removed;
}

}  // namespace memento::checkpoint
