// The safetensors format (Hugging Face's weight files): an 8-byte little-endian header length N,
// N bytes of JSON {"name": {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}, ...,
// "__metadata__": {"key": "value"}}, then the tensors' bytes, row-major, little-endian, offsets
// relative to the end of the header. And the sharded layout of a model directory that
// transformers reads: model.safetensors, or model-0000i-of-0000N.safetensors plus
// model.safetensors.index.json. docs/hf-weights.md has the details.
//
// Every error that is the file's fault throws CheckpointError naming the file, the byte offset
// and the tensor at fault.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/tensor.h"

namespace memento::checkpoint {

// The format's name of a dtype ("F32", "BF16", "F8_E4M3", "I32", ...), and back (nullopt for a
// name with no Memento dtype, e.g. "BOOL").
std::string_view safetensors_dtype_name(DType dtype);
std::optional<DType> dtype_from_safetensors_name(std::string_view name);

// Headers longer than this are refused, as the reference implementation does.
inline constexpr uint64_t kMaxSafetensorsHeaderBytes = 100'000'000;

struct SafetensorsTensorInfo {
  std::string name;
  DType dtype = DType::kF32;
  Shape shape;
  uint64_t begin = 0;  // data_offsets, relative to the data section
  uint64_t end = 0;
  uint64_t bytes() const { return end - begin; }
};

// An open, validated safetensors file, read with pread (so a file shrunk after opening gives an
// error, not a crash). Move-only.
class SafetensorsReader {
 public:
  // Opens `path` and validates the header: its length against the file size, the JSON, each
  // tensor's dtype, shape (at most Shape::kMaxDims dims) and byte count, and that the tensors
  // tile the data section exactly (in range, no overlap, no gap, nothing after the last one).
  explicit SafetensorsReader(const std::string& path);
  ~SafetensorsReader();
  SafetensorsReader(SafetensorsReader&& other) noexcept;
  SafetensorsReader& operator=(SafetensorsReader&& other) noexcept;
  SafetensorsReader(const SafetensorsReader&) = delete;
  SafetensorsReader& operator=(const SafetensorsReader&) = delete;

  const std::string& path() const { return path_; }
  uint64_t data_start() const { return data_start_; }  // 8 + N: file offset of data_offsets 0
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  const std::vector<SafetensorsTensorInfo>& tensors() const { return tensors_; }  // data order
  const SafetensorsTensorInfo* find(std::string_view name) const;  // nullptr when absent

  // Reads tensor `name` into the host tensor `dst` of the same shape, converting when dst's
  // dtype differs from the stored one (through a bounded buffer).
  void read(const std::string& name, const TensorView& dst) const;
  Tensor read(const std::string& name) const;  // in the stored dtype

 private:
  void parse_header(const std::string& header);
  void pread_exact(void* dst, uint64_t bytes, uint64_t offset, const std::string& tensor) const;

  std::string path_;
  int fd_ = -1;
  uint64_t data_start_ = 0;
  std::map<std::string, std::string> metadata_;
  std::vector<SafetensorsTensorInfo> tensors_;
  std::map<std::string, size_t, std::less<>> index_;  // name -> position in tensors_
};

struct SafetensorsEntry {
  std::string name;
  TensorView tensor;  // host memory
  DType dtype;        // stored dtype; converted from tensor.dtype() when they differ
};

// Writes `entries` to `path` atomically (temporary file, fsync, rename, fsync of the directory).
// Data is ordered by descending element size, then as given, so every tensor starts aligned to
// its element size; the header is padded with spaces to a multiple of 8 bytes. Names unique.
void write_safetensors(const std::string& path, const std::vector<SafetensorsEntry>& entries,
                       const std::map<std::string, std::string>& metadata = {});

// What a model directory holds, before any data is read.
struct SafetensorsSpec {
  std::string name;
  Shape shape;
  DType dtype;  // stored
  uint64_t bytes() const { return static_cast<uint64_t>(shape.numel()) * dtype_size(dtype); }
};

inline constexpr std::string_view kSafetensorsSingleFile = "model.safetensors";
inline constexpr std::string_view kSafetensorsIndexFile = "model.safetensors.index.json";

// Groups tensors, in order, into shards of at most max_shard_bytes (a larger tensor alone in its
// own shard), as transformers' save_pretrained does. Each shard lists indices into `specs`.
std::vector<std::vector<size_t>> plan_safetensors_shards(const std::vector<SafetensorsSpec>& specs,
                                                         uint64_t max_shard_bytes);
// "model.safetensors" for one shard, else "model-00001-of-00003.safetensors", ...
std::vector<std::string> safetensors_shard_names(size_t shards);

// Writes a model's tensors in Hugging Face's layout into `dir` (created if needed): one file, or
// shards plus model.safetensors.index.json, written last. `load(indices)` returns the entries of
// one shard (those specs, in that order), so only one shard need be in memory at a time. Files of
// an earlier export that this one does not write (other shards, a stale index) are removed last.
// Returns the files written, index last.
std::vector<std::string> write_safetensors_model(
    const std::string& dir, const std::vector<SafetensorsSpec>& specs, uint64_t max_shard_bytes,
    const std::function<std::vector<SafetensorsEntry>(const std::vector<size_t>&)>& load,
    const std::map<std::string, std::string>& metadata = {{"format", "pt"}});

// The tensors of a model directory: which file holds each name, from the index when there is
// one (checking each listed file holds what the index says), else from model.safetensors.
struct SafetensorsModel {
  std::vector<SafetensorsReader> files;
  std::map<std::string, std::pair<size_t, const SafetensorsTensorInfo*>> tensors;  // -> file
};
SafetensorsModel open_safetensors_model(const std::string& dir);

}  // namespace memento::checkpoint
