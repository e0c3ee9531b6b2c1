// The tokenizer interface and the one entry point that picks an implementation from a file:
//   Memento's byte-level BPE (.bpe text, core/data/bpe_tokenizer.h),
//   a Hugging Face tokenizer.json of byte-level BPE type (GPT-2, Llama 3, Qwen;
//     core/data/hf_tokenizer.h),
//   a SentencePiece .model (Llama 2; core/data/sentencepiece_tokenizer.h).
// Checkpoints carry the tokenizer as a string without NUL bytes (serialize_tokenizer_file).
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/data/bpe_tokenizer.h"

namespace memento {

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;

  // Token ids of text, as the reference implementation encodes it without adding BOS/EOS.
  // Thread-safe.
  virtual std::vector<int32_t> encode(std::string_view text) const = 0;
  // The text of ids; throws DataError on an id outside [0, vocab_size()).
  virtual std::string decode(const std::vector<int32_t>& ids) const = 0;
  // One more than the largest id (the embedding rows a model needs at least).
  virtual int64_t vocab_size() const = 0;
  // Begin- and end-of-sequence ids where the tokenizer defines them.
  virtual std::optional<int32_t> bos_id() const = 0;
  virtual std::optional<int32_t> eos_id() const = 0;
  // "memento-bpe", "huggingface-bpe" or "sentencepiece".
  virtual std::string name() const = 0;
  // One line: name, vocabulary, BOS/EOS.
  virtual std::string describe() const = 0;
};

// Memento's BPE behind the interface (for BpeTokenizer::bytes() or a freshly trained one);
// its eos_id() is <|endoftext|>, it has no BOS. `source` names it in messages.
std::unique_ptr<Tokenizer> make_memento_bpe_tokenizer(BpeTokenizer bpe, std::string source);

// The token that starts every document in prepared data: BOS where there is one (Llama), else
// EOS (GPT-2's and Memento's <|endoftext|>, as llm.c writes it), else none.
std::optional<int32_t> document_start_id(const Tokenizer& tokenizer);

// Loads a tokenizer file, its kind taken from the content: "memento-bpe ..." text, a JSON
// object (tokenizer.json) or else a SentencePiece model; a directory stands for its
// tokenizer.json, or else its tokenizer.model. Throws DataError naming the file (and the JSON
// key) when the file is none of these or uses a feature that is not implemented.
std::unique_ptr<Tokenizer> load_tokenizer(const std::string& path);

// The vocabulary size of a tokenizer file (loads it): what a model's vocab_size must reach.
int64_t tokenizer_vocab_size(const std::string& path);

// Throws DataError naming the file when its tokenizer has ids >= model_vocab_size.
void check_tokenizer_fits_model(const std::string& path, int64_t model_vocab_size);

// The tokenizer file as a string safe to store in a checkpoint (no NUL bytes): .bpe and
// tokenizer.json as their text, a SentencePiece model as "memento-tokenizer sentencepiece
// base64\n" + base64. Throws DataError naming the file when it is not a loadable tokenizer.
std::string serialize_tokenizer_file(const std::string& path);

// The tokenizer of a string made by serialize_tokenizer_file (or the .bpe text that older
// checkpoints stored). Errors name `source`, e.g. "checkpoint runs/x/step_100: meta/tokenizer".
std::unique_ptr<Tokenizer> tokenizer_from_serialized(const std::string& serialized,
                                                     const std::string& source);

// Standard base64 (RFC 4648, with padding); decoding throws DataError naming `source`.
std::string base64_encode(std::string_view bytes);
std::string base64_decode(std::string_view text, const std::string& source);

}  // namespace memento
