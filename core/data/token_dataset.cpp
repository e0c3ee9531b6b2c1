#include "core/data/token_dataset.h"

#include <glob.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <filesystem>
#include <limits>
#include <sstream>

#include "core/error.h"

namespace memento {
namespace {

using token_format::kLlmcHeaderBytes;
using token_format::kLlmcMagic;
using token_format::kMegatronInt32;
using token_format::kMegatronMagic;
using token_format::kMegatronUint16;
constexpr int64_t kLlmcCountOffset = 8;

constexpr int64_t kMegatronVersionOffset = 9;
constexpr int64_t kMegatronDtypeOffset = 17;
constexpr int64_t kMegatronSequencesOffset = 18;
constexpr int64_t kMegatronDocumentsOffset = 26;
constexpr int64_t kMegatronHeaderBytes = 34;
// Guards the size arithmetic below against absurd counts in a corrupt header.
constexpr uint64_t kMaxCount = uint64_t{1} << 40;

// All formats are little-endian, as is every machine we run on.
template <typename T>
T load(const uint8_t* base, int64_t offset) {
  T value;
  std::memcpy(&value, base + offset, sizeof(T));
  return value;
}

template <typename T>
void append(std::string& bytes, T value) {
  bytes.append(reinterpret_cast<const char*>(&value), sizeof(T));
}

const char* megatron_dtype_name(uint8_t code) {
  static constexpr std::array<const char*, 9> kNames = {
      "unknown", "uint8", "int8", "int16", "int32", "int64", "float64", "float32", "uint16"};
  return code < kNames.size() ? kNames[code] : "unknown";
}

bool has_glob_chars(const std::string& path) {
  return path.find_first_of("*?[") != std::string::npos;
}

std::vector<std::string> glob_paths(const std::string& pattern) {
  glob_t g{};
  const int rc = ::glob(pattern.c_str(), 0, nullptr, &g);  // sorted by glob(3)
  std::vector<std::string> paths;
  if (rc == 0)
    for (size_t i = 0; i < g.gl_pathc; ++i) paths.emplace_back(g.gl_pathv[i]);
  ::globfree(&g);
  return paths;
}

// The pattern that matches PREFIX_000000.ext, PREFIX_000001.ext, ... (trainer-data's shards).
std::string shard_pattern(const std::string& prefix, const char* ext) {
  std::string escaped;
  for (char c : prefix) {
    if (c == '*' || c == '?' || c == '[' || c == '\\') escaped += '\\';
    escaped += c;
  }
  return escaped + "_[0-9][0-9][0-9][0-9][0-9][0-9]" + ext;
}

std::vector<std::string> expand_glob(const std::string& pattern) {
  if (!has_glob_chars(pattern)) {
    if (std::filesystem::exists(pattern)) return {pattern};
    // P or P.bin that is not a file stands for trainer-data's shards P_000000.bin, ...
    const std::string prefix =
        pattern.ends_with(".bin") ? pattern.substr(0, pattern.size() - 4) : pattern;
    std::vector<std::string> shards = glob_paths(shard_pattern(prefix, ".bin"));
    MEMENTO_EXPECT(!shards.empty(), DataError, pattern,
                   ": no such file (expected an llm.c token shard, a glob of shards, a prefix "
                   "with shards PREFIX_000000.bin, ... or a Megatron prefix with .idx and .bin)");
    return shards;
  }
  std::vector<std::string> paths = glob_paths(pattern);
  MEMENTO_EXPECT(!paths.empty(), DataError, pattern, ": no files match the glob");
  return paths;
}

// "P.bin" and "P.idx" name the Megatron prefix P; anything else is the prefix itself.
std::string megatron_prefix(const std::string& path) {
  for (const char* ext : {".bin", ".idx"}) {
    if (path.size() > 4 && path.ends_with(ext)) return path.substr(0, path.size() - 4);
  }
  return path;
}

// The Megatron prefixes a path stands for, in order; empty when it names no Megatron data.
// A prefix P with P.idx is itself; without, its shards P_000000, P_000001, ...; a glob gives
// the prefixes of its matches, which must all have a .idx or none.
std::vector<std::string> megatron_prefixes(const std::string& path) {
  namespace fs = std::filesystem;
  if (!has_glob_chars(path)) {
    const std::string prefix = megatron_prefix(path);
    if (fs::exists(prefix + ".idx")) return {prefix};
    std::vector<std::string> shards = glob_paths(shard_pattern(prefix, ".idx"));
    for (std::string& s : shards) s = megatron_prefix(s);
    return shards;
  }
  std::vector<std::string> prefixes;
  for (const std::string& match : glob_paths(path)) {
    std::string p = megatron_prefix(match);
    if (std::find(prefixes.begin(), prefixes.end(), p) == prefixes.end())
      prefixes.push_back(std::move(p));
  }
  std::sort(prefixes.begin(), prefixes.end());
  const auto with_idx = std::count_if(prefixes.begin(), prefixes.end(),
                                      [](const std::string& p) { return fs::exists(p + ".idx"); });
  if (with_idx == 0) return {};
  for (const std::string& p : prefixes) {
    MEMENTO_EXPECT(fs::exists(p + ".idx"), DataError, path,
                   ": the glob matches Megatron datasets (with .idx) and also ", p,
                   ", which has no ", p, ".idx");
  }
  return prefixes;
}

}  // namespace

TokenDataset::TokenDataset(const std::string& path, std::string_view format) : path_(path) {
  std::vector<std::string> prefixes;
  if (format == "auto" || format == "megatron") prefixes = megatron_prefixes(path);
  if (format == "auto") format = prefixes.empty() ? "llmc" : "megatron";
  if (format == "llmc") {
    open_llmc(path);
  } else if (format == "megatron") {
    MEMENTO_EXPECT(!prefixes.empty() || !has_glob_chars(path), DataError, path,
                   ": no Megatron dataset (PREFIX.idx) matches the glob");
    // A single missing prefix gets open_megatron's message naming both files.
    if (prefixes.empty()) prefixes.push_back(megatron_prefix(path));
    format_ = TokenFormat::kMegatron;
    for (const std::string& prefix : prefixes) open_megatron(prefix);
  } else {
    throw DataError(detail::concat(path, ": unknown dataset format \"", format,
                                   "\", expected auto, llmc or megatron"));
  }
}

void TokenDataset::add_segment(int file, int64_t byte_offset, int64_t count, TokenType type) {
  if (count == 0) return;
  const int64_t elem = type == TokenType::kUint16 ? 2 : 4;
  if (!segments_.empty()) {
    Segment& last = segments_.back();
    if (last.file == file && last.type == type &&
        last.byte_offset + last.count * elem == byte_offset) {
      last.count += count;
      size_ += count;
      return;
    }
  }
  segments_.push_back({size_, count, file, byte_offset, type});
  size_ += count;
}

void TokenDataset::open_llmc(const std::string& pattern) {
  format_ = TokenFormat::kLlmc;
  for (const std::string& file_path : expand_glob(pattern)) {
    MappedFile f(file_path);
    const std::string& p = f.path();
    MEMENTO_EXPECT(f.size() >= kLlmcHeaderBytes, DataError, p, ": truncated: llm.c header needs ",
                   kLlmcHeaderBytes, " bytes from offset 0, file has ", f.size(), " bytes");
    const int32_t magic = load<int32_t>(f.data(), 0);
    MEMENTO_EXPECT(magic == kLlmcMagic, DataError, p, ": bad magic at offset 0: expected ",
                   kLlmcMagic, " (llm.c token shard), found ", magic);
    const int32_t version = load<int32_t>(f.data(), 4);
    MEMENTO_EXPECT(version == 1 || version == 2, DataError, p, ": unsupported version ", version,
                   " at offset 4, expected 1 (uint16 tokens) or 2 (uint32 tokens)");
    const int64_t count = load<int32_t>(f.data(), kLlmcCountOffset);
    MEMENTO_EXPECT(count >= 0, DataError, p, ": bad token count ", count, " at offset ",
                   kLlmcCountOffset, ", expected >= 0");
    const int64_t elem = version == 1 ? 2 : 4;
    const int64_t need = count * elem;
    const int64_t have = f.size() - kLlmcHeaderBytes;
    MEMENTO_EXPECT(have >= need, DataError, p, ": truncated: header at offset ", kLlmcCountOffset,
                   " says ", count, " tokens (", need, " bytes from offset ", kLlmcHeaderBytes,
                   "), file has ", f.size(), " bytes");
    MEMENTO_EXPECT(have == need, DataError, p, ": header at offset ", kLlmcCountOffset, " says ",
                   count, " tokens (", need, " bytes from offset ", kLlmcHeaderBytes,
                   "), file has ", have - need, " trailing bytes at offset ",
                   kLlmcHeaderBytes + need);
    files_.push_back(std::move(f));
    add_segment(num_files() - 1, kLlmcHeaderBytes, count,
                version == 1 ? TokenType::kUint16 : TokenType::kUint32);
  }
}

void TokenDataset::open_megatron(const std::string& prefix) {
  const std::string idx_path = prefix + ".idx";
  const std::string bin_path = prefix + ".bin";
  for (const std::string& p : {idx_path, bin_path}) {
    MEMENTO_EXPECT(std::filesystem::exists(p), DataError, p,
                   ": no such file (a Megatron dataset needs ", idx_path, " and ", bin_path, ")");
  }
  MappedFile idx(idx_path);
  const uint8_t* d = idx.data();
  MEMENTO_EXPECT(idx.size() >= kMegatronHeaderBytes, DataError, idx_path,
                 ": truncated: Megatron index header needs ", kMegatronHeaderBytes,
                 " bytes from offset 0, file has ", idx.size(), " bytes");
  MEMENTO_EXPECT(std::memcmp(d, kMegatronMagic.data(), kMegatronMagic.size()) == 0, DataError,
                 idx_path, ": bad magic at offset 0: expected \"MMIDIDX\\0\\0\" (Megatron index)");
  const uint64_t version = load<uint64_t>(d, kMegatronVersionOffset);
  MEMENTO_EXPECT(version == 1, DataError, idx_path, ": unsupported version ", version,
                 " at offset ", kMegatronVersionOffset, ", expected 1");
  const uint8_t code = load<uint8_t>(d, kMegatronDtypeOffset);
  MEMENTO_EXPECT(code == kMegatronUint16 || code == kMegatronInt32, DataError, idx_path,
                 ": unsupported token dtype code ", int{code}, " (", megatron_dtype_name(code),
                 ") at offset ", kMegatronDtypeOffset, ", expected 8 (uint16) or 4 (int32)");
  const TokenType type = code == kMegatronUint16 ? TokenType::kUint16 : TokenType::kInt32;
  const int64_t elem = code == kMegatronUint16 ? 2 : 4;
  const uint64_t nseq = load<uint64_t>(d, kMegatronSequencesOffset);
  const uint64_t ndoc = load<uint64_t>(d, kMegatronDocumentsOffset);
  MEMENTO_EXPECT(nseq < kMaxCount && ndoc < kMaxCount, DataError, idx_path,
                 ": implausible counts at offsets ", kMegatronSequencesOffset, " and ",
                 kMegatronDocumentsOffset, ": ", nseq, " sequences, ", ndoc, " documents");
  const int64_t n = static_cast<int64_t>(nseq);
  const int64_t need = n * 12 + static_cast<int64_t>(ndoc) * 8;
  MEMENTO_EXPECT(idx.size() >= kMegatronHeaderBytes + need, DataError, idx_path,
                 ": truncated: header at offset ", kMegatronSequencesOffset, " says ", nseq,
                 " sequences and ", ndoc, " documents (", need, " bytes from offset ",
                 kMegatronHeaderBytes, "), file has ", idx.size(), " bytes");
  megatron_sequences_ += n;
  megatron_documents_ += static_cast<int64_t>(ndoc);
  ++megatron_shards_;

  files_.emplace_back(bin_path);
  const int64_t bin_size = files_.back().size();
  const int64_t sizes_at = kMegatronHeaderBytes;
  const int64_t pointers_at = sizes_at + 4 * n;
  for (int64_t i = 0; i < n; ++i) {
    const int64_t len = load<int32_t>(d, sizes_at + 4 * i);
    const int64_t ptr = load<int64_t>(d, pointers_at + 8 * i);
    MEMENTO_EXPECT(len >= 0 && ptr >= 0, DataError, idx_path, ": sequence ", i, " has size ", len,
                   " (offset ", sizes_at + 4 * i, ") and pointer ", ptr, " (offset ",
                   pointers_at + 8 * i, "), expected both >= 0");
    MEMENTO_EXPECT(ptr + len * elem <= bin_size, DataError, bin_path, ": truncated: sequence ", i,
                   " needs bytes [", ptr, ", ", ptr + len * elem, ") per ", idx_path, " offset ",
                   pointers_at + 8 * i, ", file has ", bin_size, " bytes");
    add_segment(num_files() - 1, ptr, len, type);
  }
}

void TokenDataset::read(int64_t offset, int64_t n, int32_t* out) const {
  MEMENTO_EXPECT(offset >= 0 && n >= 0 && offset + n <= size_, DataError, path_,
                 ": read of tokens [", offset, ", ", offset + n, ") outside [0, ", size_, ")");
  // The segment holding `offset` is the last one starting at or before it.
  size_t i = std::upper_bound(segments_.begin(), segments_.end(), offset,
                              [](int64_t o, const Segment& s) { return o < s.start; }) -
             segments_.begin() - 1;
  for (; n > 0; ++i) {
    const Segment& s = segments_[i];
    const int64_t first = offset - s.start;
    const int64_t take = std::min(n, s.count - first);
    const uint8_t* base = files_[s.file].data() + s.byte_offset;
    switch (s.type) {
      case TokenType::kUint16:
        for (int64_t k = 0; k < take; ++k) out[k] = load<uint16_t>(base, 2 * (first + k));
        break;
      case TokenType::kUint32:
        for (int64_t k = 0; k < take; ++k)
          out[k] = static_cast<int32_t>(load<uint32_t>(base, 4 * (first + k)));
        break;
      case TokenType::kInt32:
        std::memcpy(out, base + 4 * first, static_cast<size_t>(take) * 4);
        break;
    }
    out += take;
    offset += take;
    n -= take;
  }
}

std::string TokenDataset::describe() const {
  std::ostringstream os;
  const char* dtype = segments_.empty()                         ? "uint16"
                      : segments_[0].type == TokenType::kInt32  ? "int32"
                      : segments_[0].type == TokenType::kUint32 ? "uint32"
                                                                : "uint16";
  if (format_ == TokenFormat::kLlmc) {
    os << "llm.c shards " << path_ << ": " << files_.size() << " file"
       << (files_.size() == 1 ? "" : "s") << ", " << size_ << " tokens (" << dtype << ")";
  } else {
    os << "Megatron dataset " << megatron_prefix(path_) << ": ";
    if (megatron_shards_ > 1) os << megatron_shards_ << " shards, ";
    os << megatron_sequences_ << " sequences, " << megatron_documents_
       << " document-index entries, " << size_ << " tokens (" << dtype << ")";
  }
  return os.str();
}

void TokenDataset::check_vocab(int64_t vocab_size) const {
  constexpr int64_t kChunk = 1 << 16;
  std::vector<int32_t> buf(kChunk);
  for (const Segment& s : segments_) {
    const int64_t elem = s.type == TokenType::kUint16 ? 2 : 4;
    for (int64_t done = 0; done < s.count; done += kChunk) {
      const int64_t take = std::min(kChunk, s.count - done);
      read(s.start + done, take, buf.data());
      for (int64_t k = 0; k < take; ++k) {
        if (buf[k] >= 0 && buf[k] < vocab_size) continue;
        const int64_t byte = s.byte_offset + (done + k) * elem;
        const int64_t header = format_ == TokenFormat::kLlmc ? kLlmcHeaderBytes : 0;
        throw DataError(detail::concat(files_[s.file].path(), ": token ", (byte - header) / elem,
                                       " (byte offset ", byte, ", stream offset ",
                                       s.start + done + k, ") has id ", buf[k],
                                       ", expected an id in [0, ", vocab_size, ")"));
      }
    }
  }
}

void write_llmc_shard(const std::string& path, const std::vector<uint16_t>& tokens) {
  MEMENTO_EXPECT(tokens.size() <= static_cast<size_t>(std::numeric_limits<int32_t>::max()),
                 DataError, path, ": ", tokens.size(), " tokens do not fit one llm.c shard");
  std::string bytes(static_cast<size_t>(kLlmcHeaderBytes), '\0');
  const std::array<int32_t, 3> header = {kLlmcMagic, 1, static_cast<int32_t>(tokens.size())};
  std::memcpy(bytes.data(), header.data(), sizeof(header));
  bytes.append(reinterpret_cast<const char*>(tokens.data()), tokens.size() * sizeof(uint16_t));
  write_file_atomically(path, bytes);
}

void write_megatron_dataset(const std::string& prefix,
                            const std::vector<std::vector<int32_t>>& documents) {
  bool fits_uint16 = true;
  for (const auto& doc : documents)
    for (int32_t t : doc) fits_uint16 = fits_uint16 && t >= 0 && t <= 0xFFFF;
  const int64_t elem = fits_uint16 ? 2 : 4;

  std::string bin;
  std::string idx(kMegatronMagic.data(), kMegatronMagic.size());
  append<uint64_t>(idx, 1);
  append<uint8_t>(idx, fits_uint16 ? kMegatronUint16 : kMegatronInt32);
  append<uint64_t>(idx, documents.size());
  append<uint64_t>(idx, documents.size() + 1);
  for (const auto& doc : documents) {
    MEMENTO_EXPECT(doc.size() <= static_cast<size_t>(std::numeric_limits<int32_t>::max()),
                   DataError, prefix, ": a document of ", doc.size(), " tokens is too long");
    append<int32_t>(idx, static_cast<int32_t>(doc.size()));
  }
  int64_t pointer = 0;
  for (const auto& doc : documents) {
    append<int64_t>(idx, pointer);
    pointer += static_cast<int64_t>(doc.size()) * elem;
    for (int32_t t : doc) {
      if (fits_uint16) {
        append<uint16_t>(bin, static_cast<uint16_t>(t));
      } else {
        append<int32_t>(bin, t);
      }
    }
  }
  for (size_t i = 0; i <= documents.size(); ++i) append<int64_t>(idx, static_cast<int64_t>(i));
  // The .idx is what marks a Megatron dataset as present, so it lands last.
  write_file_atomically(prefix + ".bin", bin);
  write_file_atomically(prefix + ".idx", idx);
}

}  // namespace memento
