// A SentencePiece model (Llama 2's tokenizer.model) through libsentencepiece: ids, BOS/EOS and
// decoding are SentencePiece's own, so encode() equals SentencePieceProcessor::Encode.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "core/data/tokenizer.h"

namespace memento {

class SentencePieceTokenizer final : public Tokenizer {
 public:
  // Reads a .model file; throws DataError naming the path and SentencePiece's message.
  static std::unique_ptr<SentencePieceTokenizer> load(const std::string& path);
  // From the serialized ModelProto (the file's bytes); errors name `source`.
  static std::unique_ptr<SentencePieceTokenizer> from_bytes(std::string_view bytes,
                                                            const std::string& source);
  // Learns a model of vocab_size pieces from the documents (cut into lines) in Llama 2's
  // settings: BPE (or model_type "unigram"), byte fallback, digits split, no normalisation,
  // <unk> 0, <s> 1, </s> 2. Returns the serialized model; throws DataError on failure.
  static std::string train(const std::vector<std::string>& documents, int vocab_size,
                           const std::string& model_type = "bpe", int threads = 1);
  ~SentencePieceTokenizer() override;

  std::vector<int32_t> encode(std::string_view text) const override;
  std::string decode(const std::vector<int32_t>& ids) const override;
  int64_t vocab_size() const override;
  std::optional<int32_t> bos_id() const override;
  std::optional<int32_t> eos_id() const override;
  std::string name() const override { return "sentencepiece"; }
  std::string describe() const override;

  const std::string& model_bytes() const { return bytes_; }  // the serialized ModelProto

 private:
  struct Impl;
  SentencePieceTokenizer();

  std::string source_;
  std::string bytes_;
  std::unique_ptr<Impl> impl_;
};

}  // namespace memento
