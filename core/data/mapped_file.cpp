#include "core/data/mapped_file.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
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

namespace {

// Writes all of bytes at the descriptor's position (offset < 0) or at offset.
void write_all(int fd, std::string_view bytes, int64_t offset, const std::string& what) {
  size_t written = 0;
  while (written < bytes.size()) {
    const ssize_t n = offset < 0
                          ? ::write(fd, bytes.data() + written, bytes.size() - written)
                          : ::pwrite(fd, bytes.data() + written, bytes.size() - written,
                                     static_cast<off_t>(offset + static_cast<int64_t>(written)));
    if (n < 0 && errno == EINTR) continue;
    MEMENTO_EXPECT(n > 0, DataError, what, ": write failed at byte offset ",
                   (offset < 0 ? 0 : offset) + static_cast<int64_t>(written), ": ", errno_text());
    written += static_cast<size_t>(n);
  }
}

}  // namespace

AtomicFileWriter::AtomicFileWriter(std::string path)
    : path_(std::move(path)), tmp_(path_ + ".tmp") {
  fd_ = ::open(tmp_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  MEMENTO_EXPECT(fd_ >= 0, DataError, tmp_, ": cannot create: ", errno_text());
}

AtomicFileWriter::AtomicFileWriter(AtomicFileWriter&& other) noexcept
    : path_(std::move(other.path_)),
      tmp_(std::move(other.tmp_)),
      fd_(std::exchange(other.fd_, -1)),
      buffer_(std::move(other.buffer_)),
      size_(other.size_),
      flushed_(other.flushed_) {}

AtomicFileWriter::~AtomicFileWriter() {
  if (fd_ < 0) return;
  ::close(fd_);
  ::unlink(tmp_.c_str());
}

void AtomicFileWriter::flush() {
  write_all(fd_, buffer_, -1, tmp_);
  flushed_ += static_cast<int64_t>(buffer_.size());
  buffer_.clear();
}

void AtomicFileWriter::append(std::string_view bytes) {
  MEMENTO_EXPECT(fd_ >= 0, DataError, path_, ": append after commit");
  if (buffer_.size() + bytes.size() > kBufferBytes) flush();
  if (bytes.size() >= kBufferBytes) {
    write_all(fd_, bytes, -1, tmp_);
    flushed_ += static_cast<int64_t>(bytes.size());
  } else {
    buffer_.append(bytes);
  }
  size_ += static_cast<int64_t>(bytes.size());
}

void AtomicFileWriter::write_at(int64_t offset, std::string_view bytes) {
  const auto end = offset + static_cast<int64_t>(bytes.size());
  MEMENTO_EXPECT(fd_ >= 0 && offset >= 0 && end <= size_, DataError, path_, ": write of bytes [",
                 offset, ", ", end, ") outside the ", size_, " bytes written");
  // The part already in the file is overwritten there, the rest in the buffer.
  const int64_t in_file = std::max<int64_t>(0, std::min(end, flushed_) - offset);
  if (in_file > 0) write_all(fd_, bytes.substr(0, static_cast<size_t>(in_file)), offset, tmp_);
  if (in_file < static_cast<int64_t>(bytes.size())) {
    const auto at = static_cast<size_t>(offset + in_file - flushed_);
    buffer_.replace(at, bytes.size() - static_cast<size_t>(in_file),
                    bytes.substr(static_cast<size_t>(in_file)));
  }
}

void AtomicFileWriter::commit() {
  MEMENTO_EXPECT(fd_ >= 0, DataError, path_, ": committed twice");
  flush();
  FdCloser fd(std::exchange(fd_, -1));
  // From here on a failure must still remove the temporary file.
  auto fail = [&](const std::string& message) {
    fd.close_now();
    ::unlink(tmp_.c_str());
    throw DataError(message);
  };
  if (::fsync(fd.get()) != 0) fail(detail::concat(tmp_, ": fsync failed: ", errno_text()));
  if (!fd.close_now()) {
    ::unlink(tmp_.c_str());
    throw DataError(detail::concat(tmp_, ": close failed: ", errno_text()));
  }
  if (::rename(tmp_.c_str(), path_.c_str()) != 0) {
    const std::string why = errno_text();
    ::unlink(tmp_.c_str());
    throw DataError(detail::concat("cannot rename ", tmp_, " to ", path_, ": ", why));
  }
  // Persist the rename itself; failure to open the directory is not an error for the data.
  const std::filesystem::path parent = std::filesystem::path(path_).parent_path();
  const std::string dir = parent.empty() ? std::string(".") : parent.string();
  FdCloser dir_fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (dir_fd.get() >= 0) ::fsync(dir_fd.get());
}

void write_file_atomically(const std::string& path, std::string_view bytes) {
  AtomicFileWriter writer(path);
  writer.append(bytes);
  writer.commit();
}

}  // namespace memento
