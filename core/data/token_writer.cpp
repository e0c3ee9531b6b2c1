#include "core/data/token_writer.h"

#include <glob.h>

#include <array>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <limits>

#include "core/error.h"

namespace memento {
namespace {

constexpr int64_t kUint16Vocab = 65536;
constexpr int kShardDigits = 6;

template <typename T>
void append(std::string& bytes, T value) {
  bytes.append(reinterpret_cast<const char*>(&value), sizeof(T));
}

// The prefix with glob(3)'s special characters escaped, so that it matches only itself.
std::string glob_escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (c == '*' || c == '?' || c == '[' || c == '\\') out += '\\';
    out += c;
  }
  return out;
}

std::vector<std::string> glob_paths(const std::string& pattern) {
  glob_t g{};
  std::vector<std::string> paths;
  if (::glob(pattern.c_str(), 0, nullptr, &g) == 0)
    for (size_t i = 0; i < g.gl_pathc; ++i) paths.emplace_back(g.gl_pathv[i]);
  ::globfree(&g);
  return paths;
}

}  // namespace

std::string ShardedTokenWriter::shard_name(const std::string& prefix, int index) {
  std::array<char, 16> digits{};
  std::snprintf(digits.data(), digits.size(), "%0*d", kShardDigits, index);
  return prefix + "_" + digits.data();
}

ShardedTokenWriter::ShardedTokenWriter(std::string prefix, TokenFormat format, int64_t shard_tokens,
                                       int64_t vocab_size)
    : prefix_(std::move(prefix)),
      format_(format),
      shard_tokens_(shard_tokens),
      vocab_size_(vocab_size),
      wide_(vocab_size > kUint16Vocab) {
  MEMENTO_EXPECT(shard_tokens >= 1 && shard_tokens <= kMaxShardTokens, DataError, prefix_,
                 ": shard size ", shard_tokens, " tokens, expected 1 to ", kMaxShardTokens);
  MEMENTO_EXPECT(vocab_size >= 1 && vocab_size <= std::numeric_limits<int32_t>::max(), DataError,
                 prefix_, ": vocabulary size ", vocab_size, " out of range");
}

ShardedTokenWriter::~ShardedTokenWriter() = default;

void ShardedTokenWriter::open_shard() {
  bin_.emplace(shard_name(prefix_, shards_) + ".bin");
  shard_count_ = 0;
  doc_sizes_.clear();
  if (format_ == TokenFormat::kLlmc)
    bin_->append(std::string(token_format::kLlmcHeaderBytes, '\0'));
}

void ShardedTokenWriter::close_shard() {
  const std::string name = shard_name(prefix_, shards_);
  if (format_ == TokenFormat::kLlmc) {
    const std::array<int32_t, 3> header = {token_format::kLlmcMagic, wide_ ? 2 : 1,
                                           static_cast<int32_t>(shard_count_)};
    bin_->write_at(0,
                   std::string_view(reinterpret_cast<const char*>(header.data()), sizeof(header)));
    bin_->commit();
    files_.push_back(name + ".bin");
  } else {
    bin_->commit();
    // The index format of core/data/token_dataset.h; doc_idx is 0..n (one document each).
    const auto n = static_cast<uint64_t>(doc_sizes_.size());
    std::string idx(token_format::kMegatronMagic);
    append<uint64_t>(idx, 1);
    append<uint8_t>(idx, wide_ ? token_format::kMegatronInt32 : token_format::kMegatronUint16);
    append<uint64_t>(idx, n);
    append<uint64_t>(idx, n + 1);
    idx.reserve(idx.size() + doc_sizes_.size() * 20 + 8);
    for (int32_t size : doc_sizes_) append<int32_t>(idx, size);
    int64_t pointer = 0;
    for (int32_t size : doc_sizes_) {
      append<int64_t>(idx, pointer);
      pointer += static_cast<int64_t>(size) * (wide_ ? 4 : 2);
    }
    for (uint64_t i = 0; i <= n; ++i) append<int64_t>(idx, static_cast<int64_t>(i));
    write_file_atomically(name + ".idx", idx);
    files_.push_back(name + ".bin");
    files_.push_back(name + ".idx");
  }
  bin_.reset();
  ++shards_;
}

void ShardedTokenWriter::append_tokens(std::span<const int32_t> tokens) {
  scratch_.clear();
  if (wide_) {
    scratch_.append(reinterpret_cast<const char*>(tokens.data()), tokens.size_bytes());
  } else {
    scratch_.resize(tokens.size() * 2);
    for (size_t i = 0; i < tokens.size(); ++i) {
      const auto t = static_cast<uint16_t>(tokens[i]);
      std::memcpy(scratch_.data() + 2 * i, &t, 2);
    }
  }
  bin_->append(scratch_);
  shard_count_ += static_cast<int64_t>(tokens.size());
}

void ShardedTokenWriter::add_document(std::span<const int32_t> tokens) {
  MEMENTO_EXPECT(!finished_, DataError, prefix_, ": document added after finish()");
  for (size_t i = 0; i < tokens.size(); ++i) {
    MEMENTO_EXPECT(tokens[i] >= 0 && tokens[i] < vocab_size_, DataError, prefix_, ": document ",
                   documents_, " has token id ", tokens[i], " at position ", i,
                   ", outside the vocabulary [0, ", vocab_size_, ")");
  }
  const auto n = static_cast<int64_t>(tokens.size());
  if (format_ == TokenFormat::kLlmc) {
    for (std::span<const int32_t> rest = tokens; !rest.empty();) {
      if (!bin_) open_shard();
      const auto take = static_cast<size_t>(
          std::min<int64_t>(static_cast<int64_t>(rest.size()), shard_tokens_ - shard_count_));
      append_tokens(rest.first(take));
      rest = rest.subspan(take);
      if (shard_count_ == shard_tokens_) close_shard();
    }
  } else {
    MEMENTO_EXPECT(n <= std::numeric_limits<int32_t>::max(), DataError, prefix_, ": document ",
                   documents_, " has ", n, " tokens, more than a Megatron sequence holds");
    if (bin_ && shard_count_ > 0 && shard_count_ + n > shard_tokens_) close_shard();
    if (!bin_) open_shard();
    append_tokens(tokens);
    doc_sizes_.push_back(static_cast<int32_t>(n));
    if (shard_count_ >= shard_tokens_) close_shard();
  }
  ++documents_;
  tokens_ += n;
}

void ShardedTokenWriter::finish() {
  if (finished_) return;
  finished_ = true;
  if (bin_) close_shard();
  const std::string pattern = glob_escape(prefix_) + "_" + std::string(kShardDigits, '?');
  for (const char* ext : {".bin", ".idx"}) {
    for (const std::string& path : glob_paths(pattern + ext)) {
      const std::string digits = path.substr(prefix_.size() + 1, kShardDigits);
      if (digits.find_first_not_of("0123456789") != std::string::npos) continue;
      const int index = std::stoi(digits);
      const bool other_format = format_ == TokenFormat::kLlmc && std::string_view(ext) == ".idx";
      if (index < shards_ && !other_format) continue;
      std::error_code ec;
      if (std::filesystem::remove(path, ec)) ++removed_;
    }
  }
  // The unsharded PREFIX.bin / PREFIX.idx that trainer-data wrote before it sharded would be
  // read in place of the shards (a path P.bin names the shards only when it is not a file).
  for (const char* ext : {".bin", ".idx"}) {
    std::error_code ec;
    if (std::filesystem::remove(prefix_ + ext, ec)) ++removed_;
  }
}

}  // namespace memento
