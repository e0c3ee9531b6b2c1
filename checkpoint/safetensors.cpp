#include "checkpoint/safetensors.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <bit>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <limits>
#include <nlohmann/json.hpp>
#include <numeric>
#include <regex>
#include <set>
#include <utility>

#include "checkpoint/checkpoint_dir.h"
#include "core/error.h"

namespace memento::checkpoint {

static_assert(std::endian::native == std::endian::little,
              "safetensors data is little-endian; this build writes and reads it as stored");

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

constexpr uint64_t kLengthBytes = 8;               // the header length field
constexpr uint64_t kHeaderAlignment = 8;           // data starts 8-byte aligned
constexpr size_t kConvertChunkElements = 1 << 20;  // bounded staging for dtype conversion

struct DTypeName {
  DType dtype;
  std::string_view name;
};
constexpr std::array<DTypeName, 9> kDTypeNames = {{{DType::kF32, "F32"},
                                                   {DType::kF64, "F64"},
                                                   {DType::kBF16, "BF16"},
                                                   {DType::kF16, "F16"},
                                                   {DType::kF8E4M3, "F8_E4M3"},
                                                   {DType::kF8E5M2, "F8_E5M2"},
                                                   {DType::kI32, "I32"},
                                                   {DType::kI64, "I64"},
                                                   {DType::kU16, "U16"}}};

[[noreturn]] void fail(const std::string& path, uint64_t offset, const std::string& tensor,
                       const std::string& what) {
  throw CheckpointError(memento::detail::concat(path, ": byte offset ", offset,
                                                tensor.empty() ? "" : ": tensor '" + tensor + "'",
                                                ": ", what));
}

[[noreturn]] void fail_errno(const std::string& what, const std::string& path, int error) {
  throw CheckpointError(memento::detail::concat(what, " ", path, ": ", std::strerror(error)));
}

Shape shape_of(const std::vector<int64_t>& dims) {
  static const std::array<Shape, Shape::kMaxDims + 1> kZeros = {Shape(),
                                                                Shape{0},
                                                                Shape{0, 0},
                                                                Shape{0, 0, 0},
                                                                Shape{0, 0, 0, 0},
                                                                Shape{0, 0, 0, 0, 0},
                                                                Shape{0, 0, 0, 0, 0, 0}};
  Shape s = kZeros.at(dims.size());
  for (size_t i = 0; i < dims.size(); ++i) s = s.with_dim(static_cast<int>(i), dims[i]);
  return s;
}

std::string parent_dir(const std::string& path) {
  const fs::path parent = fs::path(path).parent_path();
  return parent.empty() ? std::string(".") : parent.string();
}

std::vector<int64_t> dims_of(const Shape& s) {
  std::vector<int64_t> dims;
  for (int i = 0; i < s.ndim(); ++i) dims.push_back(s[i]);
  return dims;
}

void write_all(int fd, const void* data, size_t bytes, const std::string& path) {
  const auto* p = static_cast<const char*>(data);
  for (size_t done = 0; done < bytes;) {
    const ssize_t n = ::write(fd, p + done, bytes - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) fail_errno("cannot write", path, errno);
    done += static_cast<size_t>(n);
  }
}

// One tensor entry of a header: {"dtype": ..., "shape": [...], "data_offsets": [begin, end]}.
SafetensorsTensorInfo parse_entry(const std::string& path, uint64_t data_start,
                                  const std::string& name, const json& value) {
  auto bad = [&](const std::string& what) { fail(path, kLengthBytes, name, what); };
  if (!value.is_object()) bad("expected an object with dtype, shape and data_offsets");
  for (const char* key : {"dtype", "shape", "data_offsets"})
    if (!value.contains(key)) bad(memento::detail::concat("no '", key, "'"));
  SafetensorsTensorInfo info{name, DType::kF32, Shape(), 0, 0};
  const json& dtype = value["dtype"];
  if (!dtype.is_string()) bad("dtype is not a string");
  const auto parsed = dtype_from_safetensors_name(dtype.get<std::string>());
  if (!parsed) bad("unsupported dtype '" + dtype.get<std::string>() + "'");
  info.dtype = *parsed;
  const json& shape = value["shape"];
  if (!shape.is_array() || shape.size() > static_cast<size_t>(Shape::kMaxDims))
    bad(memento::detail::concat("shape must be a list of at most ", Shape::kMaxDims, " sizes, got ",
                                shape.dump()));
  std::vector<int64_t> dims;
  uint64_t numel = 1;
  for (const json& d : shape) {
    if (!d.is_number_unsigned()) bad("shape " + shape.dump() + " holds a non-size");
    const auto n = d.get<uint64_t>();
    if (__builtin_mul_overflow(numel, n, &numel) ||
        numel > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
      bad("shape " + shape.dump() + " overflows");
    dims.push_back(static_cast<int64_t>(n));
  }
  info.shape = shape_of(dims);
  const json& offsets = value["data_offsets"];
  if (!offsets.is_array() || offsets.size() != 2 || !offsets[0].is_number_unsigned() ||
      !offsets[1].is_number_unsigned())
    bad("data_offsets must be [begin, end], got " + offsets.dump());
  info.begin = offsets[0].get<uint64_t>();
  info.end = offsets[1].get<uint64_t>();
  // The file offset of the data, for messages (saturated: a huge begin is reported as such).
  const uint64_t at = info.begin > std::numeric_limits<uint64_t>::max() - data_start
                          ? std::numeric_limits<uint64_t>::max()
                          : data_start + info.begin;
  if (info.end < info.begin) fail(path, at, name, "data_offsets " + offsets.dump() + " end first");
  uint64_t bytes = 0;
  if (__builtin_mul_overflow(numel, dtype_size(info.dtype), &bytes))
    bad("shape " + shape.dump() + " overflows");
  if (bytes != info.bytes())
    fail(path, at, name,
         memento::detail::concat("dtype ", dtype.get<std::string>(), " and shape ",
                                 info.shape.str(), " need ", bytes, " bytes, but data_offsets [",
                                 info.begin, ", ", info.end, "] hold ", info.bytes()));
  return info;
}

}  // namespace

std::string_view safetensors_dtype_name(DType dtype) {
  for (const auto& d : kDTypeNames)
    if (d.dtype == dtype) return d.name;
  MEMENTO_CHECK(false, "no safetensors name for dtype ", dtype_name(dtype));
  return {};
}

std::optional<DType> dtype_from_safetensors_name(std::string_view name) {
  for (const auto& d : kDTypeNames)
    if (d.name == name) return d.dtype;
  return std::nullopt;
}

// ---------------------------------------------------------------------------------------------
// Reading

SafetensorsReader::SafetensorsReader(const std::string& path) : path_(path) {
  fd_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd_ < 0) fail_errno("cannot open", path, errno);
  try {
    struct stat st {};
    if (::fstat(fd_, &st) != 0) fail_errno("cannot stat", path, errno);
    const auto size = static_cast<uint64_t>(st.st_size);
    if (size < kLengthBytes)
      fail(path, 0, "",
           memento::detail::concat("file is ", size, " bytes, shorter than the 8-byte ",
                                   "header length (truncated, or not a safetensors file)"));
    uint8_t length_bytes[kLengthBytes];
    pread_exact(length_bytes, kLengthBytes, 0, "");
    uint64_t length = 0;
    for (int i = static_cast<int>(kLengthBytes) - 1; i >= 0; --i)
      length = length << 8 | length_bytes[i];
    if (length > size - kLengthBytes)
      fail(path, 0, "",
           memento::detail::concat("header length ", length, " runs past the end of the file (",
                                   size, " bytes: truncated, or not a safetensors file)"));
    if (length > kMaxSafetensorsHeaderBytes)
      fail(path, 0, "",
           memento::detail::concat("header length ", length, " exceeds the limit of ",
                                   kMaxSafetensorsHeaderBytes, " bytes"));
    std::string header(length, '\0');
    pread_exact(header.data(), length, kLengthBytes, "");
    data_start_ = kLengthBytes + length;
    parse_header(header);
    const uint64_t data_size = size - data_start_;
    // The tensors must tile the data section: sorted by offset, each starts where the last ended.
    std::vector<size_t> order(tensors_.size());
    std::iota(order.begin(), order.end(), size_t{0});
    std::sort(order.begin(), order.end(), [&](size_t a, size_t b) {
      return std::pair(tensors_[a].begin, tensors_[a].end) <
             std::pair(tensors_[b].begin, tensors_[b].end);
    });
    for (const auto& t : tensors_) {
      if (t.end > data_size)
        fail(path, data_start_ + t.begin, t.name,
             memento::detail::concat("data_offsets [", t.begin, ", ", t.end,
                                     "] run past the end of the ", "file: the data section holds ",
                                     data_size, " bytes (file size ", size, "; truncated?)"));
    }
    uint64_t expected = 0;
    const SafetensorsTensorInfo* previous = nullptr;
    for (size_t i : order) {
      const SafetensorsTensorInfo& t = tensors_[i];
      if (t.begin < expected)
        fail(path, data_start_ + t.begin, t.name,
             memento::detail::concat("data_offsets [", t.begin, ", ", t.end, "] overlap tensor '",
                                     previous->name, "' at [", previous->begin, ", ", previous->end,
                                     "]"));
      if (t.begin > expected)
        fail(path, data_start_ + expected, t.name,
             memento::detail::concat("a gap of ", t.begin - expected,
                                     " bytes before its data_offsets [", t.begin, ", ", t.end,
                                     "] (tensors must tile the data section)"));
      expected = t.end;
      previous = &t;
    }
    if (expected != data_size)
      fail(path, data_start_ + expected, "",
           memento::detail::concat(data_size - expected, " bytes after the last tensor's data"));
    std::sort(order.begin(), order.end(),
              [&](size_t a, size_t b) { return tensors_[a].begin < tensors_[b].begin; });
    std::vector<SafetensorsTensorInfo> sorted;
    for (size_t i : order) sorted.push_back(std::move(tensors_[i]));
    tensors_ = std::move(sorted);
    for (size_t i = 0; i < tensors_.size(); ++i) index_[tensors_[i].name] = i;
  } catch (...) {
    ::close(fd_);
    fd_ = -1;
    throw;
  }
}

void SafetensorsReader::parse_header(const std::string& header) {
  // Duplicate names would silently keep the last entry: the parser callback sees every key.
  std::set<std::string> seen;
  std::string duplicate;
  const json::parser_callback_t on_event = [&](int depth, json::parse_event_t event, json& parsed) {
    if (depth == 1 && event == json::parse_event_t::key) {
      const auto key = parsed.get<std::string>();
      if (!seen.insert(key).second && duplicate.empty()) duplicate = key;
    }
    return true;
  };
  json root;
  try {
    root = json::parse(header, on_event);
  } catch (const json::parse_error& e) {
    fail(path_, kLengthBytes + (e.byte > 0 ? e.byte - 1 : 0), "",
         std::string("header is not valid JSON: ") + e.what());
  }
  if (!root.is_object()) fail(path_, kLengthBytes, "", "header is not a JSON object");
  if (!duplicate.empty()) fail(path_, kLengthBytes, duplicate, "named twice in the header");
  for (const auto& [name, value] : root.items()) {
    if (name == "__metadata__") {
      if (!value.is_object()) fail(path_, kLengthBytes, "", "__metadata__ is not an object");
      for (const auto& [key, text] : value.items()) {
        if (!text.is_string())
          fail(path_, kLengthBytes, "", "__metadata__ value of '" + key + "' is not a string");
        metadata_[key] = text.get<std::string>();
      }
      continue;
    }
    tensors_.push_back(parse_entry(path_, data_start_, name, value));
  }
}

SafetensorsReader::~SafetensorsReader() {
  if (fd_ >= 0) ::close(fd_);
}

SafetensorsReader::SafetensorsReader(SafetensorsReader&& other) noexcept
    : path_(std::move(other.path_)),
      fd_(std::exchange(other.fd_, -1)),
      data_start_(other.data_start_),
      metadata_(std::move(other.metadata_)),
      tensors_(std::move(other.tensors_)),
      index_(std::move(other.index_)) {}

SafetensorsReader& SafetensorsReader::operator=(SafetensorsReader&& other) noexcept {
  if (this != &other) {
    if (fd_ >= 0) ::close(fd_);
    path_ = std::move(other.path_);
    fd_ = std::exchange(other.fd_, -1);
    data_start_ = other.data_start_;
    metadata_ = std::move(other.metadata_);
    tensors_ = std::move(other.tensors_);
    index_ = std::move(other.index_);
  }
  return *this;
}

const SafetensorsTensorInfo* SafetensorsReader::find(std::string_view name) const {
  const auto it = index_.find(name);
  return it == index_.end() ? nullptr : &tensors_[it->second];
}

void SafetensorsReader::pread_exact(void* dst, uint64_t bytes, uint64_t offset,
                                    const std::string& tensor) const {
  auto* p = static_cast<char*>(dst);
  for (uint64_t done = 0; done < bytes;) {
    const ssize_t n = ::pread(fd_, p + done, bytes - done, static_cast<off_t>(offset + done));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0)
      fail(path_, offset + done, tensor, std::string("cannot read: ") + std::strerror(errno));
    if (n == 0) fail(path_, offset + done, tensor, "unexpected end of file (shrunk while open?)");
    done += static_cast<uint64_t>(n);
  }
}

void SafetensorsReader::read(const std::string& name, const TensorView& dst) const {
  const SafetensorsTensorInfo* t = find(name);
  if (t == nullptr) throw CheckpointError(path_ + ": no tensor '" + name + "'");
  if (!(dst.shape() == t->shape))
    fail(path_, data_start_ + t->begin, name,
         "shape " + t->shape.str() + ", read into a tensor of shape " + dst.shape().str());
  MEMENTO_CHECK(dst.device().is_cpu(), "SafetensorsReader::read: ", name, " into ",
                device_name(dst.device()), " memory");
  if (t->bytes() == 0) return;
  if (dst.dtype() == t->dtype)
    return pread_exact(dst.raw(), t->bytes(), data_start_ + t->begin, name);
  const size_t in_size = dtype_size(t->dtype);
  const size_t out_size = dtype_size(dst.dtype());
  const auto numel = static_cast<size_t>(t->shape.numel());
  std::vector<char> staging(std::min(numel, kConvertChunkElements) * in_size);
  for (size_t i = 0; i < numel; i += kConvertChunkElements) {
    const size_t n = std::min(kConvertChunkElements, numel - i);
    pread_exact(staging.data(), n * in_size, data_start_ + t->begin + i * in_size, name);
    convert(staging.data(), t->dtype, static_cast<char*>(dst.raw()) + i * out_size, dst.dtype(), n);
  }
}

Tensor SafetensorsReader::read(const std::string& name) const {
  const SafetensorsTensorInfo* t = find(name);
  if (t == nullptr) throw CheckpointError(path_ + ": no tensor '" + name + "'");
  Tensor out = Tensor::empty(t->shape, t->dtype);
  read(name, out);
  return out;
}

// ---------------------------------------------------------------------------------------------
// Writing

void write_safetensors(const std::string& path, const std::vector<SafetensorsEntry>& entries,
                       const std::map<std::string, std::string>& metadata) {
  std::vector<size_t> order(entries.size());
  std::iota(order.begin(), order.end(), size_t{0});
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    return dtype_size(entries[a].dtype) > dtype_size(entries[b].dtype);
  });
  json header = json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  uint64_t at = 0;
  for (size_t i : order) {
    const SafetensorsEntry& e = entries[i];
    MEMENTO_EXPECT(!e.name.empty() && e.name != "__metadata__" && !header.contains(e.name),
                   CheckpointError, path, ": tensor name '", e.name, "' is empty, reserved or ",
                   "given twice");
    MEMENTO_CHECK(e.tensor.device().is_cpu() && (e.tensor.numel() == 0 || e.tensor.raw()),
                  "write_safetensors: ", e.name, " is not in host memory");
    const uint64_t bytes = static_cast<uint64_t>(e.tensor.numel()) * dtype_size(e.dtype);
    header[e.name] = {{"dtype", safetensors_dtype_name(e.dtype)},
                      {"shape", dims_of(e.tensor.shape())},
                      {"data_offsets", {at, at + bytes}}};
    at += bytes;
  }
  std::string text;
  try {
    text = header.dump();
  } catch (const json::exception& e) {
    throw CheckpointError(path + ": cannot write the header: " + e.what());
  }
  text.append((kHeaderAlignment - text.size() % kHeaderAlignment) % kHeaderAlignment, ' ');

  const std::string dir = parent_dir(path);
  const std::string tmp = join_path(
      dir, "." + fs::path(path).filename().string() + ".tmp." + std::to_string(::getpid()));
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) fail_errno("cannot create", tmp, errno);
  try {
    uint8_t length[kLengthBytes];
    for (size_t i = 0; i < kLengthBytes; ++i)
      length[i] = static_cast<uint8_t>(text.size() >> (8 * i));
    write_all(fd, length, kLengthBytes, tmp);
    write_all(fd, text.data(), text.size(), tmp);
    std::vector<char> staging;
    for (size_t i : order) {
      const SafetensorsEntry& e = entries[i];
      const auto numel = static_cast<size_t>(e.tensor.numel());
      if (e.tensor.dtype() == e.dtype) {
        write_all(fd, e.tensor.raw(), e.tensor.bytes(), tmp);
        continue;
      }
      const size_t in_size = dtype_size(e.tensor.dtype());
      const size_t out_size = dtype_size(e.dtype);
      staging.resize(std::min(numel, kConvertChunkElements) * out_size);
      for (size_t j = 0; j < numel; j += kConvertChunkElements) {
        const size_t n = std::min(kConvertChunkElements, numel - j);
        convert(static_cast<const char*>(e.tensor.raw()) + j * in_size, e.tensor.dtype(),
                staging.data(), e.dtype, n);
        write_all(fd, staging.data(), n * out_size, tmp);
      }
    }
    if (::fsync(fd) != 0) fail_errno("cannot fsync", tmp, errno);
    const int closed = ::close(std::exchange(fd, -1));
    if (closed != 0) fail_errno("cannot close", tmp, errno);
  } catch (...) {
    if (fd >= 0) ::close(fd);
    ::unlink(tmp.c_str());
    throw;
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    const int error = errno;
    ::unlink(tmp.c_str());
    fail_errno("cannot rename " + tmp + " to", path, error);
  }
  fsync_dir(dir);
}

}  // namespace memento::checkpoint
