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

}  // namespace memento
