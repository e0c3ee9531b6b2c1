// Byte-level BPE tokenizer (GPT-2 style). Ids 0..255 are the bytes, id 256 is the special
// end-of-text token <|endoftext|>, and id 257 + k is the token made by merge k.
//
// Text is first split into chunks, in the spirit of GPT-2's pattern: a word with its leading
// space, a digit run, a punctuation run, English contractions ('s 't 're 've 'm 'll 'd), runs
// of newlines, and other whitespace (whose last space joins the next word). Bytes >= 0x80
// count as letters, so UTF-8 words (and invalid UTF-8) stay whole. Merges never cross chunks.
//
// File format (text, one item per line):
//   memento-bpe 1 merges M
//   A B      (M lines: merge k joins tokens A and B into token 257 + k; A, B < 257 + k)
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace memento {

class BpeTokenizer {
 public:
  static constexpr int kNumBytes = 256;
  static constexpr int kEot = 256;
  static constexpr std::string_view kEotText = "<|endoftext|>";

  // Learns vocab_size - 257 merges from the documents (fewer when no pair occurs twice).
  // progress(done, total) is called now and then with merges done and merges wanted.
  // Throws DataError when vocab_size < 257.
  static BpeTokenizer train(const std::vector<std::string>& documents, int vocab_size,
                            std::function<void(int done, int total)> progress = {});
  // No merges: each byte is its own token; vocab 257 (bytes + end-of-text).
  static BpeTokenizer bytes();
  // Reads the text format above; throws DataError naming the file and line on a bad file.
  static BpeTokenizer load(const std::string& path);
  // Parses the text format from memory; errors name `source` (a path or "checkpoint ...").
  static BpeTokenizer parse(std::string_view text, const std::string& source);
  // The text format above (what save() writes).
  std::string serialize() const;
  // Writes the text format above atomically; throws DataError on I/O failure.
  void save(const std::string& path) const;

  BpeTokenizer(BpeTokenizer&&) noexcept;
  BpeTokenizer& operator=(BpeTokenizer&&) noexcept;
  ~BpeTokenizer();

  // Token ids of text. The text "<|endoftext|>" is encoded as plain bytes, never as eot().
  // Thread-safe; chunks are cached.
  std::vector<int32_t> encode(std::string_view text) const;
  // Bytes of the tokens concatenated (eot() gives "<|endoftext|>"); decode(encode(s)) == s.
  // Throws DataError on an id outside [0, vocab_size()).
  std::string decode(const std::vector<int32_t>& ids) const;

  int eot() const { return kEot; }
  int vocab_size() const { return static_cast<int>(pieces_.size()); }
  int num_merges() const { return static_cast<int>(merges_.size()); }
  // The bytes that token `id` stands for.
  const std::string& piece(int id) const { return pieces_.at(static_cast<size_t>(id)); }

  // The pre-tokenisation chunks of text, in order; they concatenate back to text.
  static std::vector<std::string_view> split_chunks(std::string_view text);

 private:
  struct Cache;
  BpeTokenizer();
  void add_merge(int32_t a, int32_t b);
  std::vector<int32_t> encode_chunk(std::string_view chunk) const;

  std::vector<std::pair<int32_t, int32_t>> merges_;
  std::vector<std::string> pieces_;  // (V) bytes of each token
  std::unique_ptr<Cache> cache_;     // pair ranks and the per-chunk cache
};

}  // namespace memento
