// Writes a token stream as numbered shards of a set size, in the formats TokenDataset reads:
//   llm.c:    PREFIX_000000.bin, PREFIX_000001.bin, ... each exactly shard_tokens tokens (the
//             last fewer); documents run across shard boundaries, as in llm.c's own data
//             scripts. Version 1 (uint16) when vocab_size <= 65536, else version 2 (uint32).
//   Megatron: PREFIX_000000.{bin,idx}, ... one sequence per document; documents stay whole, so a
//             shard holds at most shard_tokens tokens unless one document alone is longer.
//             uint16 tokens when vocab_size <= 65536, else int32.
// Every file is written atomically (AtomicFileWriter); a Megatron .idx lands after its .bin.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "core/data/mapped_file.h"
#include "core/data/token_dataset.h"

namespace memento {

class ShardedTokenWriter {
 public:
  static constexpr int64_t kDefaultShardTokens = 100'000'000;
  static constexpr int64_t kMaxShardTokens = (int64_t{1} << 31) - 1;  // llm.c's int32 count

  // Throws DataError unless 1 <= shard_tokens <= kMaxShardTokens and vocab_size >= 1.
  ShardedTokenWriter(std::string prefix, TokenFormat format, int64_t shard_tokens,
                     int64_t vocab_size);
  ShardedTokenWriter(const ShardedTokenWriter&) = delete;
  ShardedTokenWriter& operator=(const ShardedTokenWriter&) = delete;
  ~ShardedTokenWriter();  // an unfinished shard's temporary files are removed

  // Appends one document; throws DataError on an id outside [0, vocab_size).
  void add_document(std::span<const int32_t> tokens);
  // Completes the last shard, then removes files of an earlier run that this one did not write
  // (higher shard numbers, the other format's files, an unsharded PREFIX.bin/.idx), so that a
  // glob or prefix sees only this run.
  void finish();

  static std::string shard_name(const std::string& prefix, int index);  // PREFIX_000007
  const std::vector<std::string>& files() const { return files_; }      // written, in order
  int num_shards() const { return shards_; }
  int64_t documents() const { return documents_; }
  int64_t tokens() const { return tokens_; }
  int removed_stale_files() const { return removed_; }

 private:
  void open_shard();
  void close_shard();
  void append_tokens(std::span<const int32_t> tokens);

  std::string prefix_;
  TokenFormat format_;
  int64_t shard_tokens_;
  int64_t vocab_size_;
  bool wide_;  // 4-byte tokens
  std::optional<AtomicFileWriter> bin_;
  int64_t shard_count_ = 0;         // tokens in the open shard
  std::vector<int32_t> doc_sizes_;  // Megatron: the open shard's documents
  std::vector<std::string> files_;
  int shards_ = 0;
  int64_t documents_ = 0;
  int64_t tokens_ = 0;
  int removed_ = 0;
  bool finished_ = false;
  std::string scratch_;  // the bytes of one document
};

}  // namespace memento
