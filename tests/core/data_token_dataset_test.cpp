#include <gtest/gtest.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <numeric>
#include <random>

#include "core/data/token_dataset.h"
#include "core/error.h"
#include "testing/expect_error.h"

namespace memento {
namespace {

namespace fs = std::filesystem;

class TokenDatasetTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("memento_data_test_" + std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string path(const std::string& name) const { return (dir_ / name).string(); }

  fs::path dir_;
};

std::vector<uint16_t> random_tokens(size_t n, uint32_t seed) {
  std::mt19937 gen(seed);
  std::vector<uint16_t> t(n);
  for (auto& x : t) x = static_cast<uint16_t>(gen());
  return t;
}

std::vector<int32_t> read_all(const TokenDataset& d) {
  std::vector<int32_t> out(static_cast<size_t>(d.size()));
  d.read(0, d.size(), out.data());
  return out;
}

// Overwrites bytes of a file in place.
void patch(const std::string& path, int64_t offset, const void* bytes, size_t n) {
  std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
  f.seekp(offset);
  f.write(static_cast<const char*>(bytes), static_cast<std::streamsize>(n));
}

using testing::data_error_of;

TEST_F(TokenDatasetTest, LlmcRoundTrip) {
  const auto tokens = random_tokens(1000, 1);
  write_llmc_shard(path("a.bin"), tokens);
  EXPECT_FALSE(fs::exists(path("a.bin.tmp")));
  EXPECT_EQ(fs::file_size(path("a.bin")), 1024u + 2000u);
  const TokenDataset d(path("a.bin"));
  EXPECT_EQ(d.format(), TokenFormat::kLlmc);
  ASSERT_EQ(d.size(), 1000);
  const auto all = read_all(d);
  EXPECT_TRUE(std::equal(all.begin(), all.end(), tokens.begin()));
  std::vector<int32_t> part(10);
  d.read(990, 10, part.data());
  EXPECT_EQ(part[9], tokens[999]);
  EXPECT_NE(d.describe().find("1000 tokens"), std::string::npos) << d.describe();
  // Moving keeps the mapping alive.
  TokenDataset moved = TokenDataset(path("a.bin"), "llmc");
  TokenDataset target = std::move(moved);
  EXPECT_EQ(read_all(target), all);
}

TEST_F(TokenDatasetTest, LlmcGlobConcatenatesShardsInSortedOrder) {
  const auto a = random_tokens(300, 2), b = random_tokens(5, 3), c = random_tokens(700, 4);
  write_llmc_shard(path("x_002.bin"), c);  // written out of order on purpose
  write_llmc_shard(path("x_000.bin"), a);
  write_llmc_shard(path("x_001.bin"), b);
  write_llmc_shard(path("y_000.bin"), random_tokens(9, 5));
  const TokenDataset d(path("x_*.bin"));
  EXPECT_EQ(d.num_files(), 3);
  ASSERT_EQ(d.size(), 1005);
  std::vector<int32_t> expect(a.begin(), a.end());
  expect.insert(expect.end(), b.begin(), b.end());
  expect.insert(expect.end(), c.begin(), c.end());
  EXPECT_EQ(read_all(d), expect);
  std::vector<int32_t> across(20);  // spans all three shards
  d.read(295, 20, across.data());
  EXPECT_TRUE(std::equal(across.begin(), across.end(), expect.begin() + 295));
}

TEST_F(TokenDatasetTest, MegatronRoundTripUint16AndInt32) {
  const std::vector<std::vector<int32_t>> small = {{1, 2, 3}, {}, {65535, 0}, {7}};
  write_megatron_dataset(path("m"), small);
  const std::vector<int32_t> flat = {1, 2, 3, 65535, 0, 7};
  for (const std::string& p : {path("m"), path("m.bin"), path("m.idx")}) {
    const TokenDataset d(p);  // auto-detected from the .idx
    EXPECT_EQ(d.format(), TokenFormat::kMegatron);
    EXPECT_EQ(read_all(d), flat);
  }
  EXPECT_EQ(read_all(TokenDataset(path("m"), "megatron")), flat);
  EXPECT_EQ(fs::file_size(path("m.bin")), 12u);  // uint16

  const std::vector<std::vector<int32_t>> big = {{100000, 5}, {70000}};
  write_megatron_dataset(path("w"), big);
  const TokenDataset d(path("w"));
  EXPECT_EQ(read_all(d), (std::vector<int32_t>{100000, 5, 70000}));
  EXPECT_EQ(fs::file_size(path("w.bin")), 12u);  // int32
  EXPECT_NE(d.describe().find("int32"), std::string::npos) << d.describe();
}

TEST_F(TokenDatasetTest, LlmcTruncatedFileNamesFileOffsetsAndSizes) {
  write_llmc_shard(path("x.bin"), random_tokens(1000, 6));
  fs::resize_file(path("x.bin"), 1500);
  EXPECT_EQ(data_error_of([&] { TokenDataset d(path("x.bin")); }),
            path("x.bin") +
                ": truncated: header at offset 8 says 1000 tokens (2000 bytes from offset 1024), "
                "file has 1500 bytes");
  fs::resize_file(path("x.bin"), 100);
  EXPECT_NE(data_error_of([&] { TokenDataset d(path("x.bin")); })
                .find("x.bin: truncated: llm.c header needs 1024 bytes from offset 0, file has "
                      "100 bytes"),
            std::string::npos);
}

TEST_F(TokenDatasetTest, LlmcTrailingBytesAreAnError) {
  write_llmc_shard(path("x.bin"), random_tokens(10, 7));
  fs::resize_file(path("x.bin"), 1024 + 20 + 3);
  const std::string msg = data_error_of([&] { TokenDataset d(path("x.bin")); });
  EXPECT_NE(msg.find("3 trailing bytes at offset 1044"), std::string::npos) << msg;
}

TEST_F(TokenDatasetTest, LlmcBadMagicAndVersion) {
  write_llmc_shard(path("x.bin"), random_tokens(10, 8));
  const int32_t bad = 12345;
  patch(path("x.bin"), 0, &bad, 4);
  EXPECT_EQ(data_error_of([&] { TokenDataset d(path("x.bin")); }),
            path("x.bin") +
                ": bad magic at offset 0: expected 20240520 (llm.c token shard), "
                "found 12345");
  write_llmc_shard(path("v.bin"), random_tokens(10, 8));
  const int32_t version = 7;
  patch(path("v.bin"), 4, &version, 4);
  const std::string msg = data_error_of([&] { TokenDataset d(path("v.bin")); });
  EXPECT_NE(msg.find(path("v.bin") + ": unsupported version 7 at offset 4"), std::string::npos)
      << msg;
}

TEST_F(TokenDatasetTest, MissingFileEmptyGlobAndUnknownFormat) {
  std::string msg = data_error_of([&] { TokenDataset d(path("nope.bin")); });
  EXPECT_NE(msg.find(path("nope.bin") + ": no such file"), std::string::npos) << msg;
  msg = data_error_of([&] { TokenDataset d(path("nope_*.bin")); });
  EXPECT_EQ(msg, path("nope_*.bin") + ": no files match the glob");
  msg = data_error_of([&] { TokenDataset d(path("m"), "megatron"); });
  EXPECT_NE(msg.find(path("m.idx") + ": no such file"), std::string::npos) << msg;
  write_llmc_shard(path("x.bin"), random_tokens(10, 9));
  msg = data_error_of([&] { TokenDataset d(path("x.bin"), "parquet"); });
  EXPECT_NE(msg.find("unknown dataset format \"parquet\""), std::string::npos) << msg;
}

TEST_F(TokenDatasetTest, MegatronBadMagicDtypeAndTruncation) {
  const std::vector<std::vector<int32_t>> docs = {{1, 2, 3}, {4, 5, 6, 7}};
  write_megatron_dataset(path("m"), docs);
  patch(path("m.idx"), 0, "MMIDIDY", 7);
  EXPECT_EQ(data_error_of([&] { TokenDataset d(path("m")); }),
            path("m.idx") + ": bad magic at offset 0: expected \"MMIDIDX\\0\\0\" (Megatron index)");

  write_megatron_dataset(path("f"), docs);
  const uint8_t float32 = 7;
  patch(path("f.idx"), 17, &float32, 1);
  EXPECT_EQ(data_error_of([&] { TokenDataset d(path("f")); }),
            path("f.idx") +
                ": unsupported token dtype code 7 (float32) at offset 17, expected "
                "8 (uint16) or 4 (int32)");

  write_megatron_dataset(path("t"), docs);
  fs::resize_file(path("t.bin"), 10);  // sequence 1 needs bytes [6, 14)
  std::string msg = data_error_of([&] { TokenDataset d(path("t")); });
  EXPECT_NE(msg.find(path("t.bin") + ": truncated: sequence 1 needs bytes [6, 14)"),
            std::string::npos)
      << msg;
  EXPECT_NE(msg.find("file has 10 bytes"), std::string::npos) << msg;

  write_megatron_dataset(path("i"), docs);
  fs::resize_file(path("i.idx"), 40);
  msg = data_error_of([&] { TokenDataset d(path("i")); });
  EXPECT_NE(msg.find(path("i.idx") + ": truncated: header at offset 18 says 2 sequences and 3 "
                                     "documents (48 bytes from offset 34), file has 40 bytes"),
            std::string::npos)
      << msg;
}

TEST_F(TokenDatasetTest, CheckVocabNamesFileAndTokenOffset) {
  auto tokens = random_tokens(500, 10);
  for (auto& t : tokens) t %= 100;
  write_llmc_shard(path("a_0.bin"), tokens);
  tokens[123] = 5000;
  write_llmc_shard(path("a_1.bin"), tokens);
  const TokenDataset d(path("a_*.bin"));
  EXPECT_NO_THROW(d.check_vocab(5001));
  EXPECT_EQ(data_error_of([&] { d.check_vocab(4096); }),
            path("a_1.bin") +
                ": token 123 (byte offset 1270, stream offset 623) has id 5000, "
                "expected an id in [0, 4096)");

  write_megatron_dataset(path("m"), {{1, 2}, {3, 70000, 4}});
  const std::string msg = data_error_of([&] { TokenDataset(path("m")).check_vocab(1000); });
  EXPECT_NE(msg.find(path("m.bin") + ": token 3 (byte offset 12, stream offset 3) has id 70000"),
            std::string::npos)
      << msg;
}

TEST_F(TokenDatasetTest, ReadOutsideTheStreamThrows) {
  write_llmc_shard(path("x.bin"), random_tokens(10, 11));
  const TokenDataset d(path("x.bin"));
  std::vector<int32_t> buf(20);
  EXPECT_THROW(d.read(5, 6, buf.data()), DataError);
  EXPECT_THROW(d.read(-1, 1, buf.data()), DataError);
  EXPECT_NO_THROW(d.read(10, 0, buf.data()));
}

}  // namespace
}  // namespace memento
