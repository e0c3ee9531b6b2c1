// Read-only memory-mapped files and atomic file writes, the I/O under the dataset formats.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace memento {

// A whole file mapped read-only (move-only owner). Throws DataError naming the path when the
// file is missing or cannot be mapped. An empty file maps to a null pointer of size 0.
class MappedFile {
 public:
  MappedFile() = default;
  explicit MappedFile(std::string path);
  MappedFile(MappedFile&& other) noexcept;
  MappedFile& operator=(MappedFile&& other) noexcept;
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  ~MappedFile();

  const uint8_t* data() const { return data_; }
  int64_t size() const { return size_; }
  const std::string& path() const { return path_; }

 private:
  void release() noexcept;

  std::string path_;
  const uint8_t* data_ = nullptr;
  int64_t size_ = 0;
};

// Writes bytes to path.tmp, fsyncs it, renames it over path and fsyncs the directory, so a
// reader sees either the old file or the complete new one. Throws DataError on failure.
void write_file_atomically(const std::string& path, std::string_view bytes);

// The streaming form of write_file_atomically (move-only owner): bytes are appended to
// path.tmp through a buffer of kBufferBytes, commit() makes the file appear at path; a writer
// destroyed without commit() removes path.tmp. Every call throws DataError naming the file.
class AtomicFileWriter {
 public:
  static constexpr size_t kBufferBytes = size_t{4} << 20;

  explicit AtomicFileWriter(std::string path);
  AtomicFileWriter(AtomicFileWriter&& other) noexcept;
  AtomicFileWriter& operator=(AtomicFileWriter&& other) = delete;
  AtomicFileWriter(const AtomicFileWriter&) = delete;
  AtomicFileWriter& operator=(const AtomicFileWriter&) = delete;
  ~AtomicFileWriter();

  void append(std::string_view bytes);
  // Overwrites bytes already appended, at [offset, offset + bytes.size()) <= size().
  void write_at(int64_t offset, std::string_view bytes);
  int64_t size() const { return size_; }  // bytes appended so far
  const std::string& path() const { return path_; }
  // Flushes, fsyncs, closes and renames path.tmp to path, then fsyncs the directory.
  void commit();

 private:
  void flush();

  std::string path_;
  std::string tmp_;
  int fd_ = -1;
  std::string buffer_;
  int64_t size_ = 0;
  int64_t flushed_ = 0;  // bytes already in the file
};

}  // namespace memento
