// A Hugging Face tokenizer.json of byte-level BPE type (GPT-2, Llama 3, Qwen): added tokens,
// normalizer, pre_tokenizer (core/data/hf_pretokenizer.h), GPT-2's byte-to-unicode mapping, the
// BPE model (merges in "a b" or ["a", "b"] form, ignore_merges) and the ByteLevel decoder.
//
// encode() is Hugging Face's encode(text, add_special_tokens=False): added tokens in the text
// (special or not) become their ids; the post_processor (which adds BOS) is not applied.
// bos_id() is the special token the post_processor's template starts with, else one named
// <|begin_of_text|>, <s> or <|startoftext|>; eos_id() the one its template ends with, else
// <|end_of_text|>, <|endoftext|>, </s> or <|im_end|>, the first found.
// Anything else (WordPiece, Unigram, byte_fallback, dropout, other normalizers or pre-tokenizers)
// is refused with a DataError naming the file and the JSON key.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "core/data/tokenizer.h"

namespace memento {

class HfBpeTokenizer final : public Tokenizer {
 public:
  // Reads a tokenizer.json; errors name the path.
  static std::unique_ptr<HfBpeTokenizer> load(const std::string& path);
  // Parses tokenizer.json text; errors name `source`.
  static std::unique_ptr<HfBpeTokenizer> parse(std::string_view json_text,
                                               const std::string& source);
  ~HfBpeTokenizer() override;

  std::vector<int32_t> encode(std::string_view text) const override;
  // Added tokens give their content, other tokens their bytes (GPT-2's mapping undone); no
  // UTF-8 repair, so decode(encode(s)) == s for any bytes s.
  std::string decode(const std::vector<int32_t>& ids) const override;
  int64_t vocab_size() const override { return static_cast<int64_t>(pieces_.size()); }
  std::optional<int32_t> bos_id() const override { return bos_; }
  std::optional<int32_t> eos_id() const override { return eos_; }
  std::string name() const override { return "huggingface-bpe"; }
  std::string describe() const override;

  int64_t num_merges() const { return num_merges_; }
  int64_t num_added_tokens() const { return static_cast<int64_t>(added_.size()); }
  // The pre-tokenised pieces of text without added tokens (bytes, before GPT-2's mapping).
  std::vector<std::string> pre_tokenize(std::string_view text) const;

  // GPT-2's reversible byte-to-unicode mapping: the UTF-8 of the character standing for each
  // byte ("Ġ" for ' ', "Ċ" for '\n'); tokenizer.json vocabularies are written in it.
  static const std::array<std::string, 256>& byte_to_unicode();
  static std::string bytes_to_unicode(std::string_view bytes);

 private:
  struct Impl;
  struct AddedToken {
    std::string content;
    int32_t id = 0;
    bool lstrip = false;
    bool rstrip = false;
  };
  HfBpeTokenizer();
  void encode_segment(std::string_view text, std::vector<int32_t>& ids) const;
  std::vector<int32_t> encode_word(std::string_view bytes) const;

  std::string source_;
  std::vector<std::string> pieces_;  // (V) bytes each id decodes to
  std::vector<bool> valid_;          // (V) false for ids that no entry defines
  std::vector<AddedToken> added_;
  std::array<std::vector<int>, 256> added_by_first_byte_;  // indices into added_, longest first
  std::array<int32_t, 256> byte_ids_{};                    // the token of each single byte
  int64_t num_merges_ = 0;
  bool ignore_merges_ = false;
  std::optional<int32_t> bos_;
  std::optional<int32_t> eos_;
  std::unique_ptr<Impl> impl_;  // vocab and merge maps, normalizer, pre-tokenizer, cache
};

}  // namespace memento
