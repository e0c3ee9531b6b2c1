// trainer-data's data path end to end: JSONL and text in, sharded llm.c and Megatron out, the
// same bytes for any thread count, the validation split as a keyed hash of the document index,
// SentencePiece training, errors naming file and line; and sampling with a generic tokenizer.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>

#include "core/data/bpe_tokenizer.h"
#include "core/data/sentencepiece_tokenizer.h"
#include "core/data/token_dataset.h"
#include "core/data/tokenizer.h"
#include "core/error.h"
#include "core/model/llama.h"
#include "e2e_testing.h"
#include "launch/data_prep.h"
#include "launch/generate.h"

namespace memento {
namespace {

namespace fs = std::filesystem;
using testing::read_file;
using testing::run_command;

std::string trainer_data() { return std::string(MEMENTO_BINARY_DIR) + "/bin/trainer-data"; }

// Distinct documents of real text, with characters JSON must escape.
std::vector<std::string> documents(int n) {
  const std::string text = testing::fortunes_text(400000);
  std::vector<std::string> docs;
  for (int i = 0; i < n; ++i) {
    const size_t at = (static_cast<size_t>(i) * 997) % (text.size() - 600);
    docs.push_back("doc " + std::to_string(i) + " \"q\" \\ \t\n" + text.substr(at, 100 + i % 400));
  }
  return docs;
}

void write_jsonl(const std::string& path, const std::vector<std::string>& docs, size_t first,
                 size_t last) {
  std::ofstream out(path, std::ios::binary);
  for (size_t i = first; i < last; ++i)
    out << nlohmann::json{{"id", i}, {"text", docs[i]}}.dump() << "\n";
}

std::vector<int32_t> read_all(const TokenDataset& d) {
  std::vector<int32_t> out(static_cast<size_t>(d.size()));
  d.read(0, d.size(), out.data());
  return out;
}

// A byte tokenizer's stream cut at its document-start token (256) back into texts.
std::vector<std::string> texts_of(const std::vector<int32_t>& stream) {
  std::vector<std::string> out;
  for (int32_t t : stream) {
    if (t == BpeTokenizer::kEot) {
      out.emplace_back();
    } else {
      out.back() += static_cast<char>(t);
    }
  }
  return out;
}

class TrainerDataTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = testing::scratch_dir(std::string("trainer_data_") +
                                ::testing::UnitTest::GetInstance()->current_test_info()->name());
  }
  std::string path(const std::string& name) const { return dir_ + "/" + name; }
  // Every file under a directory with its bytes, by name.
  static std::map<std::string, std::string> tree(const std::string& dir) {
    std::map<std::string, std::string> files;
    for (const auto& e : fs::directory_iterator(dir))
      files[e.path().filename().string()] = read_file(e.path().string());
    return files;
  }
  std::string dir_;
};

TEST_F(TrainerDataTest, OutputIsTheSameForAnyThreadCountAndBatching) {
  const std::vector<std::string> docs = documents(300);
  fs::create_directories(path("in"));
  write_jsonl(path("in/a.jsonl"), docs, 0, 100);
  write_jsonl(path("in/b.jsonl"), docs, 100, 300);
  const std::string bpe = path("t.bpe");
  ASSERT_EQ(run_command(trainer_data() + " train-tokenizer --vocab-size 600 --out " + bpe + " " +
                        path("in") + " 2>&1")
                .exit_code,
            0);
  for (const char* format : {"llmc", "megatron"}) {
    SCOPED_TRACE(format);
    for (const char* threads : {"1", "3"}) {
      const std::string cmd = trainer_data() + " tokenize --tokenizer " + bpe + " --format " +
                              format + " --threads " + threads + " --shard-tokens 5000 --out " +
                              path(std::string(format) + threads + "/x") + " " + path("in") +
                              " 2>&1";
      const auto r = run_command(cmd);
      ASSERT_EQ(r.exit_code, 0) << r.output;
      EXPECT_NE(r.output.find("on " + std::string(threads) + " threads"), std::string::npos)
          << r.output;
    }
    const auto one = tree(path(std::string(format) + "1"));
    EXPECT_GT(one.size(), 4u);
    EXPECT_TRUE(one == tree(path(std::string(format) + "3")));
  }
  // Small batches through the library: still the same bytes.
  const auto tok = load_tokenizer(bpe);
  TokenizeOptions o;
  o.inputs = {path("in")};
  o.format = TokenFormat::kMegatron;
  o.shard_tokens = 5000;
  o.threads = 3;
  o.batch_bytes = 700;
  o.progress = false;
  o.out_prefix = path("small_batches/x");
  tokenize_corpus(o, *tok);
  EXPECT_TRUE(tree(path("small_batches")) == tree(path("megatron1")));
}

TEST_F(TrainerDataTest, ValidationIsAKeyedHashOfTheDocumentIndex) {
  const std::vector<std::string> docs = documents(400);
  write_jsonl(path("d.jsonl"), docs, 0, docs.size());
  const auto tok = make_memento_bpe_tokenizer(BpeTokenizer::bytes(), "bytes");
  std::vector<std::string> val_by_seed[2];
  for (int s = 0; s < 2; ++s) {
    TokenizeOptions o;
    o.inputs = {path("d.jsonl")};
    o.val_fraction = 0.25;
    o.seed = 7 + s;
    o.threads = 2;
    o.progress = false;
    o.out_prefix = path("seed" + std::to_string(s) + "/x");
    const TokenizeReport r = tokenize_corpus(o, *tok);
    std::vector<std::string> want_train, want_val;
    for (size_t i = 0; i < docs.size(); ++i)
      (is_validation_document(o.seed, static_cast<int64_t>(i), 0.25) ? want_val : want_train)
          .push_back(docs[i]);
    EXPECT_EQ(texts_of(read_all(TokenDataset(o.out_prefix + "_train_*.bin"))), want_train);
    val_by_seed[s] = texts_of(read_all(TokenDataset(o.out_prefix + "_val")));
    EXPECT_EQ(val_by_seed[s], want_val);
    EXPECT_EQ(r.val.documents, static_cast<int64_t>(want_val.size()));
    // Binomial(400, 0.25): mean 100, sd 8.7.
    EXPECT_GT(r.val.documents, 60);
    EXPECT_LT(r.val.documents, 140);
  }
  EXPECT_NE(val_by_seed[0], val_by_seed[1]);
  // Not the last documents, as the split used to be.
  const std::vector<std::string> tail(
      docs.end() - static_cast<std::ptrdiff_t>(val_by_seed[0].size()), docs.end());
  EXPECT_NE(val_by_seed[0], tail);
}

TEST_F(TrainerDataTest, TextInputShardsAndReport) {
  std::string text;
  const std::vector<std::string> docs = documents(50);
  for (const std::string& d : docs) text += d + "\n@@\n";
  fs::create_directories(path("txt"));
  std::ofstream(path("txt/corpus"), std::ios::binary) << text;
  const auto r = run_command(trainer_data() +
                             " tokenize --bytes --doc-separator @@ --val-fraction 0.2 --seed 3 "
                             "--shard-tokens 1000 --append-eos --out " +
                             path("out/c") + " " + path("txt") + " 2>&1");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  std::vector<int32_t> want;
  for (size_t i = 0; i < docs.size(); ++i) {
    if (is_validation_document(3, static_cast<int64_t>(i), 0.2)) continue;
    want.push_back(BpeTokenizer::kEot);
    for (unsigned char c : docs[i] + "\n") want.push_back(c);
    want.push_back(BpeTokenizer::kEot);  // --append-eos
  }
  const TokenDataset train(path("out/c_train"));
  EXPECT_EQ(read_all(train), want);
  ASSERT_EQ(train.num_files(), static_cast<int>((want.size() + 999) / 1000));
  for (int i = 0; i < train.num_files(); ++i) {
    const std::string shard = ShardedTokenWriter::shard_name(path("out/c_train"), i) + ".bin";
    EXPECT_EQ(TokenDataset(shard).size(),
              std::min<int64_t>(1000, static_cast<int64_t>(want.size()) - 1000 * i));
  }
  EXPECT_NE(r.output.find("c_train_{000000.."), std::string::npos) << r.output;
  EXPECT_NE(r.output.find(" shards)"), std::string::npos) << r.output;
  for (const char* word : {"documents", "tokens", "MB/s", "tokens/s", " s: "})
    EXPECT_NE(r.output.find(word), std::string::npos) << word << "\n" << r.output;
}

TEST_F(TrainerDataTest, ErrorsNameTheFileAndLine) {
  std::ofstream(path("bad.jsonl")) << "{\"text\": \"fine\"}\n{\"text\": \"fine\"}\n{\"body\": 1}\n";
  auto r = run_command(trainer_data() + " tokenize --bytes --out " + path("o") + " " +
                       path("bad.jsonl") + " 2>&1");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.output.find("trainer-data: error: " + path("bad.jsonl") + ":3: no \"text\" field"),
            std::string::npos)
      << r.output;
  r = run_command(trainer_data() + " tokenize --bytes --json-key body --out " + path("o") + " " +
                  path("bad.jsonl") + " 2>&1");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.output.find(path("bad.jsonl") + ":1: no \"body\" field"), std::string::npos)
      << r.output;
  std::ofstream(path("tiny.jsonl")) << "{\"text\": \"only\"}\n";
  r = run_command(trainer_data() + " tokenize --bytes --val-fraction 0.1 --out " + path("o") + " " +
                  path("tiny.jsonl") + " 2>&1");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.output.find("put none of the 1 documents in validation"), std::string::npos)
      << r.output;
  r = run_command(trainer_data() + " tokenize --bytes --threads -2 --out " + path("o") + " " +
                  path("tiny.jsonl") + " 2>&1");
  EXPECT_NE(r.output.find("--threads: expected a count"), std::string::npos) << r.output;
}

TEST_F(TrainerDataTest, SentencePieceTrainTokenizeAndInfo) {
  const std::vector<std::string> docs = documents(120);
  write_jsonl(path("d.jsonl"), docs, 0, docs.size());
  auto r = run_command(trainer_data() + " train-tokenizer --type sentencepiece --vocab-size 400 " +
                       "--out " + path("sp.model") + " " + path("d.jsonl") + " 2>&1");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("SentencePiece model"), std::string::npos) << r.output;
  r = run_command(trainer_data() + " tokenize --tokenizer " + path("sp.model") +
                  " --val-fraction 0 --format megatron --out " + path("sp/x") + " " +
                  path("d.jsonl") + " 2>&1");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const auto sp = SentencePieceTokenizer::load(path("sp.model"));
  std::vector<int32_t> want;
  for (const std::string& d : docs) {
    want.push_back(1);  // <s>
    const std::vector<int32_t> ids = sp->encode(d);
    want.insert(want.end(), ids.begin(), ids.end());
  }
  EXPECT_EQ(read_all(TokenDataset(path("sp/x_train"))), want);
  EXPECT_FALSE(fs::exists(path("sp/x_val_000000.bin")));
  r = run_command(trainer_data() + " tokenizer-info --text 'Hello world' " + path("sp.model") +
                  " 2>&1");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("vocab 400, bos <s> (1), eos </s> (2)"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("decoded: Hello world"), std::string::npos) << r.output;
}

// The model's vocabulary may be padded past the tokenizer's: sampling never picks the padding
// (whose ids the tokenizer cannot decode), and a tokenizer larger than the model is refused.
TEST(GenerateTest, SamplesOnlyTheTokenizersIds) {
  ModelConfig c;
  c.vocab_size = 320;
  c.dim = 16;
  c.n_layers = 1;
  c.n_heads = 2;
  c.n_kv_heads = 1;
  c.ffn_dim = 32;
  c.max_seq_len = 64;
  c.init_std = 2.0;  // peaked logits, so the padding rows often win
  c.dtype = DType::kF32;
  LlamaModel model(c);
  model.params().allocate(DType::kF32);
  model.params().initialize(3);
  const auto bytes = make_memento_bpe_tokenizer(BpeTokenizer::bytes(), "bytes");
  SampleArgs args;
  args.prompt = "The ";
  args.tokens = 40;
  args.temperature = 1.0;
  args.top_k = 0;
  for (uint64_t seed = 0; seed < 2; ++seed) {
    args.seed = seed;
    EXPECT_NO_THROW(generate(model, *bytes, args)) << seed;
  }
  c.vocab_size = 200;
  LlamaModel small(c);
  small.params().allocate(DType::kF32);
  small.params().initialize(3);
  try {
    generate(small, *bytes, args);
    ADD_FAILURE() << "expected a DataError";
  } catch (const DataError& e) {
    EXPECT_NE(std::string(e.what()).find("the tokenizer has 257 ids but the model's vocab_size "
                                         "is 200"),
              std::string::npos)
        << e.what();
  }
}

}  // namespace
}  // namespace memento
