#include "core/data/sentencepiece_tokenizer.h"

#include <sentencepiece_processor.h>
#include <sentencepiece_trainer.h>

#include <fstream>
#include <sstream>
#include <unordered_map>

#include "core/error.h"

namespace memento {
namespace {

// SentencePiece trains on sentences: the documents' non-empty lines, one at a time.
class LineIterator final : public sentencepiece::SentenceIterator {
 public:
  explicit LineIterator(const std::vector<std::string>& documents) : documents_(documents) {
    advance();
  }
  bool done() const override { return doc_ >= documents_.size(); }
  void Next() override { advance(); }
  const std::string& value() const override { return line_; }
  sentencepiece::util::Status status() const override { return {}; }

 private:
  void advance() {
    while (doc_ < documents_.size()) {
      const std::string& d = documents_[doc_];
      if (pos_ >= d.size()) {
        ++doc_;
        pos_ = 0;
        continue;
      }
      size_t eol = d.find('\n', pos_);
      if (eol == std::string::npos) eol = d.size();
      line_.assign(d, pos_, eol - pos_);
      pos_ = eol + 1;
      if (!line_.empty()) return;
    }
  }

  const std::vector<std::string>& documents_;
  size_t doc_ = 0;
  size_t pos_ = 0;
  std::string line_;
};

}  // namespace

struct SentencePieceTokenizer::Impl {
  sentencepiece::SentencePieceProcessor processor;
};

SentencePieceTokenizer::SentencePieceTokenizer() : impl_(std::make_unique<Impl>()) {}
SentencePieceTokenizer::~SentencePieceTokenizer() = default;

std::unique_ptr<SentencePieceTokenizer> SentencePieceTokenizer::load(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  MEMENTO_EXPECT(in.good(), DataError, path, ": cannot open tokenizer file");
  std::ostringstream os;
  os << in.rdbuf();
  return from_bytes(os.str(), path);
}

std::unique_ptr<SentencePieceTokenizer> SentencePieceTokenizer::from_bytes(
    std::string_view bytes, const std::string& source) {
  std::unique_ptr<SentencePieceTokenizer> tok(new SentencePieceTokenizer());
  tok->source_ = source;
  tok->bytes_ = std::string(bytes);
  const auto status = tok->impl_->processor.LoadFromSerializedProto(tok->bytes_);
  MEMENTO_EXPECT(status.ok(), DataError, source,
                 ": not a Memento .bpe, a tokenizer.json or a SentencePiece model (SentencePiece "
                 "says: ",
                 status.ToString(), ")");
  MEMENTO_EXPECT(tok->impl_->processor.GetPieceSize() > 0, DataError, source,
                 ": SentencePiece model has no pieces");
  return tok;
}

std::string SentencePieceTokenizer::train(const std::vector<std::string>& documents, int vocab_size,
                                          const std::string& model_type, int threads) {
  MEMENTO_EXPECT(model_type == "bpe" || model_type == "unigram", DataError,
                 "SentencePiece model type \"", model_type, "\": expected bpe or unigram");
  const std::unordered_map<std::string, std::string> args = {
      {"model_type", model_type},
      {"vocab_size", std::to_string(vocab_size)},
      {"character_coverage", "0.99995"},
      {"byte_fallback", "true"},
      {"split_digits", "true"},
      {"allow_whitespace_only_pieces", "true"},
      {"remove_extra_whitespaces", "false"},
      {"normalization_rule_name", "identity"},
      {"max_sentence_length", "1000000"},
      {"unk_id", "0"},
      {"bos_id", "1"},
      {"eos_id", "2"},
      {"pad_id", "-1"},
      {"num_threads", std::to_string(std::max(1, threads))},
      {"minloglevel", "2"},
  };
  LineIterator lines(documents);
  std::string model;
  const auto status = sentencepiece::SentencePieceTrainer::Train(args, &lines, &model);
  MEMENTO_EXPECT(status.ok(), DataError, "SentencePiece training (vocab ", vocab_size, ", ",
                 model_type, ") failed: ", status.ToString());
  return model;
}

std::vector<int32_t> SentencePieceTokenizer::encode(std::string_view text) const {
  std::vector<int> ids;
  const auto status = impl_->processor.Encode(text, &ids);
  MEMENTO_EXPECT(status.ok(), DataError, source_, ": SentencePiece cannot encode a ", text.size(),
                 "-byte text: ", status.ToString());
  return {ids.begin(), ids.end()};
}

std::string SentencePieceTokenizer::decode(const std::vector<int32_t>& ids) const {
  for (int32_t id : ids) {
    MEMENTO_EXPECT(id >= 0 && id < vocab_size(), DataError, source_, ": token id ", id,
                   " is outside the vocabulary [0, ", vocab_size(), ")");
  }
  std::string text;
  const auto status = impl_->processor.Decode(std::vector<int>(ids.begin(), ids.end()), &text);
  MEMENTO_EXPECT(status.ok(), DataError, source_,
                 ": SentencePiece cannot decode: ", status.ToString());
  return text;
}

int64_t SentencePieceTokenizer::vocab_size() const { return impl_->processor.GetPieceSize(); }

std::optional<int32_t> SentencePieceTokenizer::bos_id() const {
  const int id = impl_->processor.bos_id();
  return id >= 0 ? std::optional<int32_t>(id) : std::nullopt;
}

std::optional<int32_t> SentencePieceTokenizer::eos_id() const {
  const int id = impl_->processor.eos_id();
  return id >= 0 ? std::optional<int32_t>(id) : std::nullopt;
}

std::string SentencePieceTokenizer::describe() const {
  std::ostringstream os;
  os << "SentencePiece model " << source_ << ": vocab " << vocab_size();
  auto name = [&](std::optional<int32_t> id) {
    return id ? detail::concat(impl_->processor.IdToPiece(*id), " (", *id, ")")
              : std::string("none");
  };
  os << ", bos " << name(bos_id()) << ", eos " << name(eos_id());
  return os.str();
}

}  // namespace memento
