#include "core/data/mapped_file.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <utility>

#include "core/error.h"

namespace memento {
namespace {

std::string errno_text() { return std::strerror(errno); }

// Closes a POSIX file descriptor on every path out of a function.
class FdCloser {
 public:
  explicit FdCloser(int fd) : fd_(fd) {}
  FdCloser(const FdCloser&) = delete;
  FdCloser& operator=(const FdCloser&) = delete;
  ~FdCloser() {
    if (fd_ >= 0) ::close(fd_);
  }
  int get() const { return fd_; }
  // Closes now and reports whether close succeeded (write errors can surface here).
  bool close_now() {
    const int rc = ::close(fd_);
    fd_ = -1;
    return rc == 0;
  }

 private:
  int fd_;
};

}  // namespace

MappedFile::MappedFile(std::string path) : path_(std::move(path)) {
  FdCloser fd(::open(path_.c_str(), O_RDONLY | O_CLOEXEC));
  MEMENTO_EXPECT(fd.get() >= 0, DataError, path_, ": cannot open: ", errno_text());
  struct stat st {};
  MEMENTO_EXPECT(::fstat(fd.get(), &st) == 0, DataError, path_, ": cannot stat: ", errno_text());
  MEMENTO_EXPECT(S_ISREG(st.st_mode), DataError, path_, ": not a regular file");
  size_ = static_cast<int64_t>(st.st_size);
  if (size_ == 0) return;
  void* p = ::mmap(nullptr, static_cast<size_t>(size_), PROT_READ, MAP_SHARED, fd.get(), 0);
  MEMENTO_EXPECT(p != MAP_FAILED, DataError, path_, ": cannot mmap ", size_,
                 " bytes: ", errno_text());
  data_ = static_cast<const uint8_t*>(p);
}

MappedFile::MappedFile(MappedFile&& other) noexcept
    : path_(std::move(other.path_)),
      data_(std::exchange(other.data_, nullptr)),
      size_(std::exchange(other.size_, 0)) {}

MappedFile& MappedFile::operator=(MappedFile&& other) noexcept {
  if (this != &other) {
    release();
    path_ = std::move(other.path_);
    data_ = std::exchange(other.data_, nullptr);
    size_ = std::exchange(other.size_, 0);
  }
  return *this;
}

MappedFile::~MappedFile() { release(); }

void MappedFile::release() noexcept {
  if (data_ != nullptr) ::munmap(const_cast<uint8_t*>(data_), static_cast<size_t>(size_));
  data_ = nullptr;
  size_ = 0;
}

void write_file_atomically(const std::string& path, std::string_view bytes) {
  const std::string tmp = path + ".tmp";
  {
    FdCloser fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
    MEMENTO_EXPECT(fd.get() >= 0, DataError, tmp, ": cannot create: ", errno_text());
    size_t written = 0;
    while (written < bytes.size()) {
      const ssize_t n = ::write(fd.get(), bytes.data() + written, bytes.size() - written);
      if (n < 0 && errno == EINTR) continue;
      MEMENTO_EXPECT(n > 0, DataError, tmp, ": write failed at byte offset ", written, ": ",
                     errno_text());
      written += static_cast<size_t>(n);
    }
    MEMENTO_EXPECT(::fsync(fd.get()) == 0, DataError, tmp, ": fsync failed: ", errno_text());
    MEMENTO_EXPECT(fd.close_now(), DataError, tmp, ": close failed: ", errno_text());
  }
  MEMENTO_EXPECT(::rename(tmp.c_str(), path.c_str()) == 0, DataError, "cannot rename ", tmp, " to ",
                 path, ": ", errno_text());
  // Persist the rename itself; failure to open the directory is not an error for the data.
  const std::filesystem::path parent = std::filesystem::path(path).parent_path();
  const std::string dir = parent.empty() ? std::string(".") : parent.string();
  FdCloser dir_fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (dir_fd.get() >= 0) ::fsync(dir_fd.get());
}

}  // namespace memento
