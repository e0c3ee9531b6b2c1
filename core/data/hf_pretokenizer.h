// The text-splitting half of a Hugging Face tokenizer.json: its normalizer and pre_tokenizer,
// run on byte strings. Regular expressions run in PCRE2 with UTF and Unicode properties (\p{L},
// \p{N}, lookaheads), in place of the Oniguruma engine Hugging Face uses; bytes that are not
// valid UTF-8 (which Hugging Face never sees: its input is a Rust string) match no pattern and
// end up in pieces of their own.
#pragma once

#include <deque>
#include <memory>
#include <nlohmann/json_fwd.hpp>
#include <string>
#include <string_view>
#include <vector>

namespace memento {

// A compiled PCRE2 pattern (UTF, UCP, invalid UTF-8 tolerated; JIT where available).
// Move-only; matching is thread-safe.
class Regex {
 public:
  // Throws DataError naming `where` and the offset of the error in the pattern.
  Regex(const std::string& pattern, const std::string& where);
  Regex(Regex&& other) noexcept;
  Regex& operator=(Regex&& other) noexcept;
  Regex(const Regex&) = delete;
  Regex& operator=(const Regex&) = delete;
  ~Regex();

  // The first non-empty match at or after byte `from`: sets [start, end) and returns true.
  bool find(std::string_view text, size_t from, size_t& start, size_t& end) const;

 private:
  void* code_ = nullptr;  // pcre2_code_8
  std::string where_;
};

// GPT-2's pre-tokenisation pattern, which the ByteLevel pre-tokenizer applies with use_regex.
extern const char* const kGpt2Pattern;

// The "pre_tokenizer" of a tokenizer.json: Split, Digits and Sequence steps ending in one
// ByteLevel step, the shape GPT-2, Llama 3 and Qwen use.
class PreTokenizer {
 public:
  // Throws DataError naming `where` and the JSON key of any unsupported type or option.
  static PreTokenizer from_json(const nlohmann::json& value, const std::string& where);

  // Appends the pieces of text in order. A piece views text or a string kept in arena
  // (ByteLevel's add_prefix_space makes new strings).
  void split(std::string_view text, std::vector<std::string_view>& pieces,
             std::deque<std::string>& arena) const;

 private:
  enum class Behavior { kRemoved, kIsolated, kMergedWithPrevious, kMergedWithNext, kContiguous };
  struct Step {
    std::unique_ptr<Regex> regex;  // a Split by regex (or null: by `literal`)
    std::string literal;
    Behavior behavior = Behavior::kIsolated;
    bool invert = false;
    bool prefix_space = false;  // ByteLevel's add_prefix_space instead of a split
  };
  static void add_steps(const nlohmann::json& value, const std::string& key,
                        const std::string& where, PreTokenizer& out, bool& byte_level);
  void apply(const Step& step, std::string_view text, std::vector<std::string_view>& out,
             std::deque<std::string>& arena) const;

  std::vector<Step> steps_;
};

// The "normalizer" of a tokenizer.json: none, or Unicode normal forms NFC/NFD/NFKC/NFKD (and a
// Sequence of them), which need a build with ICU (normalizers_available()).
class Normalizer {
 public:
  // Throws DataError naming `where` and the key of an unsupported normalizer.
  static Normalizer from_json(const nlohmann::json& value, const std::string& where);
  static bool normalizers_available();

  bool is_identity() const { return forms_.empty(); }
  std::string apply(std::string_view text) const;

 private:
  std::vector<int> forms_;  // 0 NFC, 1 NFD, 2 NFKC, 3 NFKD, applied in order
};

}  // namespace memento
