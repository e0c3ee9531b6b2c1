// Sharded token output: shard sizes and names, both formats and token widths, read back by
// TokenDataset as the same stream; stale shards; atomic streaming writes.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <numeric>
#include <random>

#include "core/data/mapped_file.h"
#include "core/data/token_dataset.h"
#include "core/data/token_writer.h"
#include "core/error.h"
#include "testing/expect_error.h"
#include "testing/temp_dir_test.h"

namespace memento {
namespace {

namespace fs = std::filesystem;

using testing::data_error_of;

std::vector<int32_t> read_all(const TokenDataset& d) {
  std::vector<int32_t> out(static_cast<size_t>(d.size()));
  d.read(0, d.size(), out.data());
  return out;
}

std::string file_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

class TokenWriterTest : public testing::TempDirTest {
 protected:
  std::vector<std::string> listing() const {
    std::vector<std::string> names;
    for (const auto& e : fs::directory_iterator(dir_))
      names.push_back(e.path().filename().string());
    std::sort(names.begin(), names.end());
    return names;
  }

  // Documents of 1..40 tokens with ids below vocab.
  static std::vector<std::vector<int32_t>> documents(int n, int64_t vocab, uint32_t seed) {
    std::mt19937 gen(seed);
    std::vector<std::vector<int32_t>> docs(static_cast<size_t>(n));
    for (auto& d : docs) {
      d.resize(1 + gen() % 40);
      for (auto& t : d) t = static_cast<int32_t>(gen() % static_cast<uint32_t>(vocab));
    }
    return docs;
  }
  static std::vector<int32_t> flat(const std::vector<std::vector<int32_t>>& docs) {
    std::vector<int32_t> out;
    for (const auto& d : docs) out.insert(out.end(), d.begin(), d.end());
    return out;
  }
};

TEST_F(TokenWriterTest, LlmcShardsHoldExactlyShardTokensAndReadBackAsOneStream) {
  const auto docs = documents(100, 50000, 1);
  ShardedTokenWriter w(path("x_train"), TokenFormat::kLlmc, 500, 50000);
  for (const auto& d : docs) w.add_document(d);
  w.finish();
  const int64_t total = static_cast<int64_t>(flat(docs).size());
  ASSERT_EQ(w.num_shards(), (total + 499) / 500);
  EXPECT_EQ(w.files().front(), path("x_train_000000.bin"));
  EXPECT_EQ(w.files().back(),
            path("x_train_" + std::string(5, '0') + std::to_string(w.num_shards() - 1) + ".bin"));
  for (int i = 0; i < w.num_shards(); ++i) {
    const TokenDataset shard(w.files()[i]);
    EXPECT_EQ(shard.size(), i + 1 < w.num_shards() ? 500 : total - 500 * i) << i;
    EXPECT_EQ(fs::file_size(w.files()[i]), 1024 + 2 * static_cast<uint64_t>(shard.size()));
  }
  EXPECT_EQ(w.documents(), 100);
  EXPECT_EQ(w.tokens(), total);
  // A glob, the prefix, and the unsharded name older trainer-data wrote (configs use it).
  for (const std::string& p : {path("x_train_*.bin"), path("x_train"), path("x_train.bin")}) {
    const TokenDataset d(p);
    EXPECT_EQ(d.format(), TokenFormat::kLlmc);
    EXPECT_EQ(d.num_files(), w.num_shards());
    EXPECT_EQ(read_all(d), flat(docs)) << p;
  }
  for (const std::string& name : listing()) EXPECT_FALSE(name.ends_with(".tmp")) << name;
}

TEST_F(TokenWriterTest, WideVocabulariesUseVersion2AndInt32) {
  const auto docs = documents(30, 128256, 2);
  ShardedTokenWriter llmc(path("l"), TokenFormat::kLlmc, 100, 128256);
  ShardedTokenWriter mega(path("m"), TokenFormat::kMegatron, 100, 128256);
  for (const auto& d : docs) {
    llmc.add_document(d);
    mega.add_document(d);
  }
  llmc.finish();
  mega.finish();
  int32_t version = 0;
  std::memcpy(&version, file_bytes(path("l_000000.bin")).data() + 4, 4);
  EXPECT_EQ(version, 2);
  EXPECT_EQ(read_all(TokenDataset(path("l_*.bin"))), flat(docs));
  EXPECT_EQ(file_bytes(path("m_000000.idx"))[17], 4);  // int32 tokens
  const TokenDataset m(path("m"));
  EXPECT_EQ(m.format(), TokenFormat::kMegatron);
  EXPECT_EQ(read_all(m), flat(docs));
  EXPECT_NE(m.describe().find("int32"), std::string::npos) << m.describe();
  bool any_big = false;
  for (int32_t t : flat(docs)) any_big = any_big || t >= 65536;
  EXPECT_TRUE(any_big);
}

TEST_F(TokenWriterTest, MegatronShardsKeepDocumentsWhole) {
  const auto docs = documents(200, 1000, 3);
  ShardedTokenWriter w(path("d_train"), TokenFormat::kMegatron, 300, 1000);
  for (const auto& d : docs) w.add_document(d);
  w.finish();
  ASSERT_GT(w.num_shards(), 3);
  // Each shard holds whole documents, at most 300 tokens, and the next document would not fit.
  size_t doc = 0;
  int64_t sequences = 0;
  for (int i = 0; i < w.num_shards(); ++i) {
    const std::string prefix = ShardedTokenWriter::shard_name(path("d_train"), i);
    EXPECT_TRUE(fs::exists(prefix + ".idx") && fs::exists(prefix + ".bin")) << prefix;
    const TokenDataset shard(prefix);
    std::vector<int32_t> expect;
    while (doc < docs.size() && expect.size() + docs[doc].size() <= 300) {
      expect.insert(expect.end(), docs[doc].begin(), docs[doc].end());
      ++doc;
      ++sequences;
    }
    EXPECT_EQ(read_all(shard), expect) << prefix;
  }
  EXPECT_EQ(doc, docs.size());
  for (const std::string& p :
       {path("d_train"), path("d_train_*"), path("d_train_*.idx"), path("d_train_*.bin")}) {
    const TokenDataset d(p);
    EXPECT_EQ(d.format(), TokenFormat::kMegatron) << p;
    EXPECT_EQ(read_all(d), flat(docs)) << p;
    EXPECT_NE(d.describe().find(std::to_string(w.num_shards()) + " shards, " +
                                std::to_string(sequences) + " sequences"),
              std::string::npos)
        << d.describe();
  }
}

TEST_F(TokenWriterTest, ADocumentLongerThanAShardGetsAShardOfItsOwn) {
  ShardedTokenWriter w(path("big"), TokenFormat::kMegatron, 10, 100);
  std::vector<int32_t> small(4, 1), huge(25, 2);
  w.add_document(small);
  w.add_document(huge);
  w.add_document(small);
  w.finish();
  ASSERT_EQ(w.num_shards(), 3);
  EXPECT_EQ(TokenDataset(ShardedTokenWriter::shard_name(path("big"), 1)).size(), 25);
  ShardedTokenWriter l(path("lbig"), TokenFormat::kLlmc, 10, 100);
  l.add_document(huge);
  l.finish();
  EXPECT_EQ(l.num_shards(), 3);  // 10 + 10 + 5
}

TEST_F(TokenWriterTest, StaleShardsOfAnEarlierRunAreRemoved) {
  const auto docs = documents(100, 1000, 4);
  {
    ShardedTokenWriter w(path("s"), TokenFormat::kMegatron, 200, 1000);
    for (const auto& d : docs) w.add_document(d);
    w.finish();
    ASSERT_GT(w.num_shards(), 3);
  }
  std::ofstream(path("s_other.bin")) << "not a shard";
  write_llmc_shard(path("s.bin"), {7, 7, 7});  // the unsharded output of older trainer-data
  ShardedTokenWriter w(path("s"), TokenFormat::kLlmc, 100000, 1000);
  w.add_document(docs[0]);
  w.finish();
  EXPECT_GT(w.removed_stale_files(), 0);
  EXPECT_EQ(listing(), (std::vector<std::string>{"s_000000.bin", "s_other.bin"}));
  EXPECT_EQ(read_all(TokenDataset(path("s"))), docs[0]);  // llm.c now: no .idx left behind
  // An empty writer removes every shard of its prefix.
  ShardedTokenWriter empty(path("s"), TokenFormat::kLlmc, 10, 1000);
  empty.finish();
  EXPECT_EQ(empty.num_shards(), 0);
  EXPECT_EQ(listing(), (std::vector<std::string>{"s_other.bin"}));
}

TEST_F(TokenWriterTest, BadIdsAndSizesAreErrors) {
  ShardedTokenWriter w(path("e"), TokenFormat::kLlmc, 10, 300);
  const std::vector<int32_t> bad = {1, 2, 300};
  EXPECT_EQ(data_error_of([&] { w.add_document(bad); }),
            path("e") +
                ": document 0 has token id 300 at position 2, outside the vocabulary "
                "[0, 300)");
  EXPECT_NE(data_error_of([&] {
              ShardedTokenWriter x(path("e"), TokenFormat::kLlmc, 0, 300);
            }).find("shard size 0 tokens"),
            std::string::npos);
}

TEST_F(TokenWriterTest, AtomicFileWriterPatchesAcrossItsBufferAndCleansUp) {
  std::string expect;
  {
    AtomicFileWriter w(path("a.bin"));
    for (int i = 0; i < 3; ++i) {
      const std::string chunk(AtomicFileWriter::kBufferBytes / 2 + 17, static_cast<char>('a' + i));
      w.append(chunk);
      expect += chunk;
    }
    // Bytes both flushed and still buffered: the patch straddles the flushed boundary.
    const int64_t at = static_cast<int64_t>(AtomicFileWriter::kBufferBytes) - 3;
    w.write_at(at, "0123456789");
    expect.replace(static_cast<size_t>(at), 10, "0123456789");
    w.write_at(0, "HEAD");
    expect.replace(0, 4, "HEAD");
    EXPECT_FALSE(fs::exists(path("a.bin")));
    EXPECT_TRUE(fs::exists(path("a.bin.tmp")));
    w.commit();
  }
  EXPECT_EQ(file_bytes(path("a.bin")), expect);
  {
    AtomicFileWriter w(path("b.bin"));
    w.append("partial");
  }
  EXPECT_FALSE(fs::exists(path("b.bin")));
  EXPECT_FALSE(fs::exists(path("b.bin.tmp")));
  AtomicFileWriter w(path("c.bin"));
  w.append("abc");
  EXPECT_NE(data_error_of([&] { w.write_at(2, "xy"); }).find("outside the 3 bytes written"),
            std::string::npos);
}

TEST_F(TokenWriterTest, MegatronGlobMixingFormatsIsAnError) {
  ShardedTokenWriter w(path("mix"), TokenFormat::kMegatron, 10, 100);
  w.add_document(std::vector<int32_t>{1, 2, 3});
  w.finish();
  write_llmc_shard(path("mix_zzz.bin"), {1, 2});
  const std::string msg = data_error_of([&] { TokenDataset d(path("mix_*.bin")); });
  EXPECT_NE(msg.find("the glob matches Megatron datasets (with .idx) and also " + path("mix_zzz")),
            std::string::npos)
      << msg;
  EXPECT_NE(data_error_of([&] {
              TokenDataset d(path("none_*"), "megatron");
            }).find("no Megatron dataset (PREFIX.idx) matches the glob"),
            std::string::npos);
}

}  // namespace
}  // namespace memento
