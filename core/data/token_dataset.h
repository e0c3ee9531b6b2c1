// Token datasets on disk, read through mmap as one flat stream of token ids.
//
// Formats:
//   llm.c shards: a 256 x int32 header (magic 20240520, version, token count) then the tokens,
//     uint16 for version 1 (GPT-2 style) and uint32 for version 2 (LLaMA-3 style). A path may
//     be one file, a glob ("data/fortunes_train_*.bin") or a prefix P (or P.bin that is not a
//     file) whose shards are P_000000.bin, P_000001.bin, ...; shards concatenate in sorted order.
//   Megatron-LM indexed dataset: prefix P with P.idx (magic "MMIDIDX\0\0", uint64 version 1,
//     uint8 dtype code, uint64 sequence count, uint64 document-index count, int32 sizes[],
//     int64 byte pointers[], int64 doc_idx[]) and P.bin. All sequences concatenate in index
//     order; token dtypes uint16 (code 8) and int32 (code 4) are supported. A path may also be
//     a prefix P with shards P_000000.{idx,bin}, ... or a glob of prefixes or of their files
//     ("data/x_train_*"); shards concatenate in sorted order.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "core/data/mapped_file.h"

namespace memento {

enum class TokenFormat { kLlmc, kMegatron };

// On-disk constants of the two formats, shared by the reader and the writers.
namespace token_format {
inline constexpr int32_t kLlmcMagic = 20240520;
inline constexpr int64_t kLlmcHeaderBytes = 256 * 4;
inline constexpr std::string_view kMegatronMagic{"MMIDIDX\0\0", 9};
inline constexpr uint8_t kMegatronInt32 = 4;
inline constexpr uint8_t kMegatronUint16 = 8;
}  // namespace token_format

class TokenDataset {
 public:
  // Opens `path` as format "auto" | "llmc" | "megatron". Auto picks Megatron when the path
  // names Megatron data (a .idx for the prefix, its shards or every glob match), else llm.c.
  // Throws DataError naming the file, the byte offset and what was expected on bad input.
  explicit TokenDataset(const std::string& path, std::string_view format = "auto");
  TokenDataset(TokenDataset&&) noexcept = default;
  TokenDataset& operator=(TokenDataset&&) noexcept = default;
  TokenDataset(const TokenDataset&) = delete;
  TokenDataset& operator=(const TokenDataset&) = delete;
  ~TokenDataset() = default;

  int64_t size() const { return size_; }             // tokens in the whole stream
  const std::string& path() const { return path_; }  // as given to the constructor
  TokenFormat format() const { return format_; }
  int num_files() const { return static_cast<int>(files_.size()); }

  // Copies tokens [offset, offset + n) of the stream into out. Throws DataError when the range
  // is outside [0, size()).
  void read(int64_t offset, int64_t n, int32_t* out) const;

  // One line: format, files, token count, token dtype.
  std::string describe() const;

  // Scans every token; throws DataError naming the file and token offset of the first id that
  // is negative or >= vocab_size.
  void check_vocab(int64_t vocab_size) const;

 private:
  enum class TokenType { kUint16, kUint32, kInt32 };
  // A contiguous run of tokens in one mapped file.
  struct Segment {
    int64_t start = 0;        // first token's offset in the stream
    int64_t count = 0;        // tokens
    int file = 0;             // index into files_
    int64_t byte_offset = 0;  // of the first token within the file
    TokenType type = TokenType::kUint16;
  };

  void open_llmc(const std::string& pattern);
  void open_megatron(const std::string& prefix);
  void add_segment(int file, int64_t byte_offset, int64_t count, TokenType type);

  std::string path_;
  TokenFormat format_ = TokenFormat::kLlmc;
  std::vector<MappedFile> files_;
  std::vector<Segment> segments_;
  int64_t size_ = 0;
  int64_t megatron_sequences_ = 0;
  int64_t megatron_documents_ = 0;
  int megatron_shards_ = 0;
};

// Writes one llm.c shard (version 1, uint16 tokens) atomically (path.tmp, fsync, rename).
void write_llmc_shard(const std::string& path, const std::vector<uint16_t>& tokens);

// Writes prefix.idx and prefix.bin atomically, one sequence per document and one document per
// sequence (doc_idx = 0..n). Tokens are stored as uint16 when every id fits, else int32.
void write_megatron_dataset(const std::string& prefix,
                            const std::vector<std::vector<int32_t>>& documents);

}  // namespace memento
