// load_tokenizer's choice of implementation, the SentencePiece wrapper against SentencePiece's
// own processor, and the checkpoint form of tokenizer files.
#include <gtest/gtest.h>
#include <sentencepiece_processor.h>
#include <sentencepiece_trainer.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "core/data/bpe_tokenizer.h"
#include "core/data/hf_tokenizer.h"
#include "core/data/sentencepiece_tokenizer.h"
#include "core/data/tokenizer.h"
#include "core/error.h"
#include "testing/expect_error.h"
#include "testing/temp_dir_test.h"

namespace memento {
namespace {

namespace fs = std::filesystem;

using testing::data_error_of;

std::vector<std::string> corpus() {
  std::vector<std::string> docs;
  std::string text;
  std::ifstream in("/usr/share/games/fortunes/fortunes", std::ios::binary);
  text.append(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  text.resize(std::min<size_t>(text.size(), 60000));
  for (size_t i = 0; i < text.size(); i += 1000) docs.push_back(text.substr(i, 1000));
  docs.emplace_back("naïve café — 日本語のテキスト 🙂 ünïcödé 12345 don't\n");
  return docs;
}

const std::vector<std::string>& samples() {
  static const std::vector<std::string> kSamples = {
      "Hello world",
      "It's 2024: the year of  multiple   spaces\nand\n\nnewlines\ttabs",
      "naïve café — 日本語のテキスト 🙂 ünïcödé",
      " leading space and trailing ",
      "unseen characters: Ωμέγα ж ℵ ∑ 😀",
  };
  return kSamples;
}

class TokenizerTest : public testing::TempDirTest {
 protected:
  // A SentencePiece model trained by SentencePiece's own trainer (not our wrapper).
  std::string train_sentencepiece() const {
    const std::string input = path("sp_input.txt");
    {
      std::ofstream out(input, std::ios::binary);
      for (const std::string& d : corpus()) out << d << "\n";
    }
    const std::string prefix = path("sp");
    const auto status = sentencepiece::SentencePieceTrainer::Train(
        "--input=" + input + " --model_prefix=" + prefix +
        " --vocab_size=400 --model_type=bpe --byte_fallback=true --character_coverage=0.9995 "
        "--minloglevel=2");
    EXPECT_TRUE(status.ok()) << status.ToString();
    return prefix + ".model";
  }
};

TEST_F(TokenizerTest, SentencePieceIdsAreSentencePiecesOwn) {
  const std::string model = train_sentencepiece();
  sentencepiece::SentencePieceProcessor reference;
  ASSERT_TRUE(reference.Load(model).ok());
  const std::unique_ptr<Tokenizer> tok = load_tokenizer(model);
  EXPECT_EQ(tok->name(), "sentencepiece");
  EXPECT_EQ(tok->vocab_size(), 400);
  EXPECT_EQ(tok->bos_id(), 1);
  EXPECT_EQ(tok->eos_id(), 2);
  EXPECT_EQ(document_start_id(*tok), 1);
  for (const std::string& s : samples()) {
    std::vector<int> expected;
    ASSERT_TRUE(reference.Encode(s, &expected).ok());
    const std::vector<int32_t> ids = tok->encode(s);
    EXPECT_EQ(std::vector<int>(ids.begin(), ids.end()), expected) << s;
    std::string decoded;
    ASSERT_TRUE(reference.Decode(expected, &decoded).ok());
    EXPECT_EQ(tok->decode(ids), decoded) << s;
  }
  EXPECT_EQ(tok->decode(tok->encode("Hello world")), "Hello world");
  // Byte fallback keeps characters the model never saw.
  EXPECT_EQ(tok->decode(tok->encode("Ωμέγα 😀")), "Ωμέγα 😀");
  EXPECT_NE(data_error_of([&] { tok->decode({400}); }).find("token id 400"), std::string::npos);
}

TEST_F(TokenizerTest, SentencePieceTrainingInLlama2Settings) {
  const std::string bytes = SentencePieceTokenizer::train(corpus(), 400);
  const auto tok = SentencePieceTokenizer::from_bytes(bytes, "trained");
  EXPECT_EQ(tok->vocab_size(), 400);
  EXPECT_EQ(tok->bos_id(), 1);
  EXPECT_EQ(tok->eos_id(), 2);
  // Identity normalisation, byte fallback and kept whitespace: every sample round-trips.
  for (const std::string& s : samples()) EXPECT_EQ(tok->decode(tok->encode(s)), s) << s;
  // Digits are split one per piece.
  const std::vector<int32_t> digits = tok->encode("12345");
  EXPECT_GE(digits.size(), 5u);
}

TEST_F(TokenizerTest, LoadPicksTheImplementationFromTheContent) {
  const BpeTokenizer bpe = BpeTokenizer::train(corpus(), 300);
  bpe.save(path("t.bpe"));
  EXPECT_EQ(load_tokenizer(path("t.bpe"))->name(), "memento-bpe");
  EXPECT_EQ(load_tokenizer(path("t.bpe"))->eos_id(), BpeTokenizer::kEot);
  EXPECT_FALSE(load_tokenizer(path("t.bpe"))->bos_id().has_value());
  EXPECT_EQ(tokenizer_vocab_size(path("t.bpe")), 300);
  EXPECT_EQ(load_tokenizer(path("t.bpe"))->encode(samples()[1]), bpe.encode(samples()[1]));

  const std::string model = train_sentencepiece();
  fs::create_directories(path("llama2"));
  fs::copy_file(model, path("llama2/tokenizer.model"));
  EXPECT_EQ(load_tokenizer(path("llama2"))->name(), "sentencepiece");

  nlohmann::json vocab = nlohmann::json::object();
  for (int b = 0; b < 256; ++b)
    vocab[HfBpeTokenizer::bytes_to_unicode(std::string(1, static_cast<char>(b)))] = b;
  const nlohmann::json j = {
      {"model", {{"type", "BPE"}, {"vocab", vocab}, {"merges", nlohmann::json::array()}}},
      {"pre_tokenizer", {{"type", "ByteLevel"}, {"add_prefix_space", false}}},
      {"added_tokens", {{{"id", 256}, {"content", "<|endoftext|>"}, {"special", true}}}}};
  fs::create_directories(path("gpt2"));
  write("gpt2/tokenizer.json", "\n  " + j.dump(2));
  fs::copy_file(path("llama2/tokenizer.model"), path("gpt2/tokenizer.model"));
  EXPECT_EQ(load_tokenizer(path("gpt2"))->name(), "huggingface-bpe");  // tokenizer.json first
  EXPECT_EQ(tokenizer_vocab_size(path("gpt2/tokenizer.json")), 257);

  write("junk.txt", "hello, I am not a tokenizer\n");
  std::string msg = data_error_of([&] { load_tokenizer(path("junk.txt")); });
  EXPECT_NE(
      msg.find(path("junk.txt") + ": not a Memento .bpe, a tokenizer.json or a SentencePiece"),
      std::string::npos)
      << msg;
  msg = data_error_of([&] { load_tokenizer(path("missing.model")); });
  EXPECT_NE(msg.find("missing.model: no such tokenizer file"), std::string::npos) << msg;
  fs::create_directories(path("empty_dir"));
  msg = data_error_of([&] { load_tokenizer(path("empty_dir")); });
  EXPECT_NE(msg.find("without tokenizer.json or tokenizer.model"), std::string::npos) << msg;
}

TEST_F(TokenizerTest, CheckFitsModelNamesBothSizes) {
  BpeTokenizer::train(corpus(), 300).save(path("t.bpe"));
  EXPECT_NO_THROW(check_tokenizer_fits_model(path("t.bpe"), 300));
  EXPECT_NO_THROW(check_tokenizer_fits_model(path("t.bpe"), 512));
  const std::string msg = data_error_of([&] { check_tokenizer_fits_model(path("t.bpe"), 299); });
  EXPECT_NE(
      msg.find(path("t.bpe") + ": the tokenizer has 300 token ids but model.vocab_size is 299"),
      std::string::npos)
      << msg;
}

TEST_F(TokenizerTest, SerializedFormsHaveNoNulAndLoadBack) {
  const std::string model = train_sentencepiece();
  std::ifstream in(model, std::ios::binary);
  const std::string model_bytes{std::istreambuf_iterator<char>(in),
                                std::istreambuf_iterator<char>()};
  ASSERT_NE(model_bytes.find('\0'), std::string::npos);  // a binary protobuf
  const std::string stored = serialize_tokenizer_file(model);
  EXPECT_EQ(stored.find('\0'), std::string::npos);
  EXPECT_TRUE(stored.starts_with("memento-tokenizer sentencepiece base64\n"));
  const auto sp = tokenizer_from_serialized(stored, "ckpt: meta/tokenizer");
  EXPECT_EQ(sp->name(), "sentencepiece");
  for (const std::string& s : samples()) EXPECT_EQ(sp->encode(s), load_tokenizer(model)->encode(s));

  // .bpe text is stored as itself, so the checkpoints written before this change still load.
  const BpeTokenizer bpe = BpeTokenizer::train(corpus(), 300);
  bpe.save(path("t.bpe"));
  EXPECT_EQ(serialize_tokenizer_file(path("t.bpe")), bpe.serialize());
  EXPECT_EQ(tokenizer_from_serialized(bpe.serialize(), "old")->encode(samples()[2]),
            bpe.encode(samples()[2]));

  const std::string msg = data_error_of(
      [] { tokenizer_from_serialized("memento-tokenizer tiktoken base64\nAAAA", "ckpt"); });
  EXPECT_NE(msg.find("ckpt: unknown tokenizer tag \"memento-tokenizer tiktoken base64\""),
            std::string::npos)
      << msg;
  EXPECT_NE(data_error_of([] {
              tokenizer_from_serialized("memento-tokenizer sentencepiece base64\nA*==", "ckpt");
            }).find("ckpt: bad base64 character at offset 1"),
            std::string::npos);
}

TEST(Base64Test, Rfc4648VectorsAndErrors) {
  const std::vector<std::pair<std::string, std::string>> vectors = {{"", ""},
                                                                    {"f", "Zg=="},
                                                                    {"fo", "Zm8="},
                                                                    {"foo", "Zm9v"},
                                                                    {"foob", "Zm9vYg=="},
                                                                    {"fooba", "Zm9vYmE="},
                                                                    {"foobar", "Zm9vYmFy"}};
  for (const auto& [plain, coded] : vectors) {
    EXPECT_EQ(base64_encode(plain), coded);
    EXPECT_EQ(base64_decode(coded, "t"), plain);
  }
  std::string bytes;
  for (int b = 0; b < 256; ++b) bytes += static_cast<char>(b);
  EXPECT_EQ(base64_decode(base64_encode(bytes), "t"), bytes);
  EXPECT_NE(data_error_of([] { base64_decode("Zm9", "src"); }).find("src: base64 text of 3"),
            std::string::npos);
  EXPECT_NE(data_error_of([] { base64_decode("Z=9v", "src"); }).find("offset 1"),
            std::string::npos);
}

}  // namespace
}  // namespace memento
