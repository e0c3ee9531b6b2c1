#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <random>

#include "core/data/bpe_tokenizer.h"
#include "core/error.h"

namespace memento {
namespace {

namespace fs = std::filesystem;

constexpr const char* kEnglish =
    "It was the best of times, it was the worst of times, it was the age of wisdom, it was the "
    "age of foolishness, it was the epoch of belief, it was the epoch of incredulity, it was the "
    "season of Light, it was the season of Darkness, it was the spring of hope, it was the "
    "winter of despair, we had everything before us, we had nothing before us, we were all "
    "going direct to Heaven, we were all going direct the other way. There were a king with a "
    "large jaw and a queen with a plain face, on the throne of England; there were a king with "
    "a large jaw and a queen with a fair face, on the throne of France. In both countries it "
    "was clearer than crystal to the lords of the State preserves of loaves and fishes, that "
    "things in general were settled for ever. It was the year of Our Lord 1775.\n";

std::vector<std::string> english_corpus() {
  std::vector<std::string> docs;
  for (int i = 0; i < 40; ++i) docs.push_back(std::to_string(i) + ": " + kEnglish);
  docs.emplace_back(
      "naïve café — 日本語のテキスト 🙂 ünïcödé\n\n\tTabs  and   spaces\r\n");
  return docs;
}

std::string random_bytes(std::mt19937& gen, size_t n) {
  std::string s(n, '\0');
  for (char& c : s) c = static_cast<char>(gen() & 0xFF);
  return s;
}

// The straightforward BPE trainer: recount every pair after every merge. The incremental
// trainer must learn exactly the same merges.
std::vector<std::string> naive_bpe_pieces(const std::vector<std::string>& docs, int vocab) {
  std::map<std::string, int64_t> freq;
  for (const auto& d : docs)
    for (auto chunk : BpeTokenizer::split_chunks(d)) ++freq[std::string(chunk)];
  std::vector<std::pair<std::vector<int32_t>, int64_t>> words;
  for (const auto& [w, c] : freq) {
    std::vector<int32_t> ids;
    for (unsigned char ch : w) ids.push_back(ch);
    words.emplace_back(ids, c);
  }
  std::vector<std::string> pieces;
  for (int b = 0; b < 256; ++b) pieces.emplace_back(1, static_cast<char>(b));
  pieces.emplace_back("<|endoftext|>");
  while (static_cast<int>(pieces.size()) < vocab) {
    std::map<std::pair<int32_t, int32_t>, int64_t> counts;
    for (const auto& [ids, c] : words)
      for (size_t k = 0; k + 1 < ids.size(); ++k) counts[{ids[k], ids[k + 1]}] += c;
    if (counts.empty()) break;
    auto best = counts.begin();  // ties: the smallest pair, which std::map visits first
    for (auto it = counts.begin(); it != counts.end(); ++it)
      if (it->second > best->second) best = it;
    const auto [a, b] = best->first;
    const auto z = static_cast<int32_t>(pieces.size());
    pieces.push_back(pieces[a] + pieces[b]);
    for (auto& [ids, c] : words) {
      std::vector<int32_t> merged;
      for (size_t k = 0; k < ids.size(); ++k) {
        if (k + 1 < ids.size() && ids[k] == a && ids[k + 1] == b) {
          merged.push_back(z);
          ++k;
        } else {
          merged.push_back(ids[k]);
        }
      }
      ids = merged;
    }
  }
  return pieces;
}

class BpeFileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("memento_bpe_test_" + std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string write(const std::string& name, const std::string& text) const {
    const std::string p = (dir_ / name).string();
    std::ofstream(p) << text;
    return p;
  }
  std::string load_error(const std::string& text) const {
    const std::string p = write("bad.bpe", text);
    try {
      BpeTokenizer::load(p);
    } catch (const DataError& e) {
      return e.what();
    }
    ADD_FAILURE() << "expected a DataError for:\n" << text;
    return "";
  }

  fs::path dir_;
};

TEST(BpeSplit, ChunksLikeGpt2) {
  const auto chunks = BpeTokenizer::split_chunks("Hello world, it's 2024!!\n\nBye   now\tok");
  const std::vector<std::string_view> expect = {
      "Hello", " world", ",", " it", "'s", " 2024", "!!", "\n\n", "Bye", "  ", " now", "\t", "ok"};
  EXPECT_EQ(chunks, expect);
  EXPECT_EQ(BpeTokenizer::split_chunks("x  \n"), (std::vector<std::string_view>{"x", "  ", "\n"}));
  EXPECT_EQ(BpeTokenizer::split_chunks(" café"), (std::vector<std::string_view>{" café"}));
}

TEST(BpeSplit, ChunksConcatenateBackToAnyInput) {
  std::mt19937 gen(1);
  for (int i = 0; i < 50; ++i) {
    const std::string s = random_bytes(gen, 1 + gen() % 400) + std::string(300, '-');
    std::string joined;
    for (auto c : BpeTokenizer::split_chunks(s)) {
      ASSERT_FALSE(c.empty());
      ASSERT_LE(c.size(), 128u);
      joined += c;
    }
    ASSERT_EQ(joined, s);
  }
}

TEST(BpeTokenizer, TrainingMatchesTheNaiveTrainer) {
  const auto docs = english_corpus();
  const BpeTokenizer tok = BpeTokenizer::train(docs, 400);
  const auto expect = naive_bpe_pieces(docs, 400);
  ASSERT_EQ(tok.vocab_size(), static_cast<int>(expect.size()));
  for (int id = 0; id < tok.vocab_size(); ++id) ASSERT_EQ(tok.piece(id), expect[id]) << id;

  // Repetitive text over a tiny alphabet: overlapping pairs ("aaa") and many ties.
  std::mt19937 gen(3);
  std::vector<std::string> runs;
  for (int d = 0; d < 30; ++d) {
    std::string s;
    for (int k = 0; k < 200; ++k) s += "aab "[gen() % 4];
    runs.push_back(s);
  }
  const BpeTokenizer tok2 = BpeTokenizer::train(runs, 330);
  const auto expect2 = naive_bpe_pieces(runs, 330);
  ASSERT_EQ(tok2.vocab_size(), static_cast<int>(expect2.size()));
  for (int id = 0; id < tok2.vocab_size(); ++id) ASSERT_EQ(tok2.piece(id), expect2[id]) << id;
}

TEST(BpeTokenizer, RoundTripsArbitraryBytesUtf8AndInvalidUtf8) {
  const BpeTokenizer tok = BpeTokenizer::train(english_corpus(), 500);
  std::mt19937 gen(2);
  std::vector<std::string> texts = {"",
                                    "a",
                                    kEnglish,
                                    "naïve café — 日本語 🙂",
                                    std::string("\xff\xfe\xc3\x28\xa0\xa1\xe2\x82", 8),
                                    std::string("nul\0inside", 10),
                                    "<|endoftext|>",
                                    std::string(1000, ' ') + std::string(500, '9')};
  for (int i = 0; i < 100; ++i) texts.push_back(random_bytes(gen, gen() % 300));
  for (const auto& t : texts) {
    const auto ids = tok.encode(t);
    for (int32_t id : ids) {
      ASSERT_GE(id, 0);
      ASSERT_LT(id, tok.vocab_size());
      ASSERT_NE(id, tok.eot());
    }
    ASSERT_EQ(tok.decode(ids), t);
  }
  EXPECT_EQ(tok.decode({tok.eot()}), "<|endoftext|>");
  EXPECT_THROW(tok.decode({tok.vocab_size()}), DataError);
  EXPECT_THROW(tok.decode({-1}), DataError);
}

TEST(BpeTokenizer, CompressesEnglishAndReportsProgress) {
  int last_done = -1, last_total = -1, calls = 0;
  const BpeTokenizer tok = BpeTokenizer::train(english_corpus(), 560, [&](int done, int total) {
    EXPECT_GE(done, last_done);
    last_done = done;
    last_total = total;
    ++calls;
  });
  EXPECT_EQ(tok.vocab_size(), 560);
  EXPECT_EQ(last_done, 560 - 257);
  EXPECT_EQ(last_total, 560 - 257);
  EXPECT_GE(calls, 2);
  const std::string seen = kEnglish;
  EXPECT_GT(static_cast<double>(seen.size()) / tok.encode(seen).size(), 3.0);
  const std::string unseen = "It was the season of the worst foolishness in both countries.";
  EXPECT_GT(static_cast<double>(unseen.size()) / tok.encode(unseen).size(), 1.5);
}

TEST(BpeTokenizer, BytesModeAndSmallVocab) {
  const BpeTokenizer tok = BpeTokenizer::bytes();
  EXPECT_EQ(tok.vocab_size(), 257);
  EXPECT_EQ(tok.eot(), 256);
  EXPECT_EQ(tok.encode("A\xff"), (std::vector<int32_t>{65, 255}));
  EXPECT_THROW(BpeTokenizer::train({"abc"}, 256), DataError);
  // A tiny corpus runs out of pairs before the wanted vocab size.
  const BpeTokenizer small = BpeTokenizer::train({"abab"}, 1000);
  EXPECT_EQ(small.vocab_size(), 259);  // "ab", then "abab"
  EXPECT_EQ(small.encode("abab"), (std::vector<int32_t>{258}));
}

TEST_F(BpeFileTest, SaveLoadRoundTripIsExact) {
  const BpeTokenizer tok = BpeTokenizer::train(english_corpus(), 700);
  const std::string p = (dir_ / "tok.bpe").string();
  tok.save(p);
  const BpeTokenizer back = BpeTokenizer::load(p);
  ASSERT_EQ(back.vocab_size(), tok.vocab_size());
  for (int id = 0; id < tok.vocab_size(); ++id) ASSERT_EQ(back.piece(id), tok.piece(id));
  EXPECT_EQ(back.encode(kEnglish), tok.encode(kEnglish));
  // Training is deterministic: a second run writes the same file.
  BpeTokenizer::train(english_corpus(), 700).save((dir_ / "again.bpe").string());
  std::ifstream a(p), b(dir_ / "again.bpe");
  EXPECT_EQ(std::string(std::istreambuf_iterator<char>(a), {}),
            std::string(std::istreambuf_iterator<char>(b), {}));
  BpeTokenizer::bytes().save((dir_ / "bytes.bpe").string());
  EXPECT_EQ(BpeTokenizer::load((dir_ / "bytes.bpe").string()).vocab_size(), 257);
}

TEST_F(BpeFileTest, BadFilesNameFileAndLine) {
  const std::string p = (dir_ / "bad.bpe").string();
  EXPECT_NE(load_error("gpt2 merges\n").find(p + ":1: expected \"memento-bpe 1 merges M\""),
            std::string::npos);
  EXPECT_NE(load_error("memento-bpe 1 merges 2\n32 116\n300 1\n")
                .find(p + ":3: expected \"A B\" with token ids below 258"),
            std::string::npos);
  EXPECT_NE(load_error("memento-bpe 1 merges 1\n256 1\n").find(p + ":2:"), std::string::npos);
  EXPECT_NE(load_error("memento-bpe 1 merges 3\n32 116\n").find("file ends after 1 merges"),
            std::string::npos);
  EXPECT_NE(load_error("memento-bpe 1 merges 1\n32 116\n1 2\n").find(p + ":3: extra line"),
            std::string::npos);
  try {
    BpeTokenizer::load(p + ".missing");
    FAIL();
  } catch (const DataError& e) {
    EXPECT_NE(std::string(e.what()).find(p + ".missing: cannot open"), std::string::npos);
  }
}

}  // namespace
}  // namespace memento
