#include "checkpoint/crc32c.h"

#include <gtest/gtest.h>

#include <cstring>
#include <random>
#include <string>
#include <vector>

namespace memento::checkpoint {
namespace {

// Reference values: RFC 3720 (iSCSI) appendix B.4 and the CRC catalogue's check value.
TEST(Crc32c, MatchesPublishedVectors) {
  const std::string check = "123456789";
  EXPECT_EQ(crc32c(check.data(), check.size()), 0xE3069283u);
  std::vector<unsigned char> zeros(32, 0x00), ones(32, 0xFF), up(32), down(32);
  for (int i = 0; i < 32; ++i) {
    up[i] = static_cast<unsigned char>(i);
    down[i] = static_cast<unsigned char>(31 - i);
  }
  EXPECT_EQ(crc32c(zeros.data(), zeros.size()), 0x8A9136AAu);
  EXPECT_EQ(crc32c(ones.data(), ones.size()), 0x62A8AB43u);
  EXPECT_EQ(crc32c(up.data(), up.size()), 0x46DD794Eu);
  EXPECT_EQ(crc32c(down.data(), down.size()), 0x113FDB5Cu);
  EXPECT_EQ(crc32c(nullptr, 0), 0u);
}

TEST(Crc32c, TableAndHardwarePathsAgreeOnEveryLengthAndAlignment) {
  std::mt19937_64 rng(42);
  std::vector<unsigned char> data(4096 + 16);
  for (auto& b : data) b = static_cast<unsigned char>(rng());
  for (size_t offset = 0; offset < 8; ++offset) {
    for (size_t size : {0, 1, 7, 8, 9, 15, 16, 63, 64, 65, 1000, 4096}) {
      const uint32_t table = detail::crc32c_slice8(data.data() + offset, size, 0);
      EXPECT_EQ(crc32c(data.data() + offset, size), table) << offset << " " << size;
      if (detail::cpu_has_sse42()) {
        EXPECT_EQ(detail::crc32c_sse42(data.data() + offset, size, 0), table);
      }
    }
  }
}

TEST(Crc32c, ChainsAcrossPieces) {
  std::vector<unsigned char> data(10000);
  std::mt19937 rng(1);
  for (auto& b : data) b = static_cast<unsigned char>(rng());
  const uint32_t whole = crc32c(data.data(), data.size());
  for (size_t cut : {0, 1, 13, 4096, 9999, 10000}) {
    const uint32_t first = crc32c(data.data(), cut);
    EXPECT_EQ(crc32c(data.data() + cut, data.size() - cut, first), whole) << cut;
    EXPECT_EQ(detail::crc32c_slice8(data.data() + cut, data.size() - cut,
                                    detail::crc32c_slice8(data.data(), cut, 0)),
              whole);
  }
}

TEST(Crc32c, DetectsEverySingleBitFlip) {
  std::vector<unsigned char> data(257, 0x5A);
  const uint32_t clean = crc32c(data.data(), data.size());
  for (size_t i = 0; i < data.size(); ++i) {
    for (int bit = 0; bit < 8; ++bit) {
      data[i] ^= static_cast<unsigned char>(1u << bit);
      EXPECT_NE(crc32c(data.data(), data.size()), clean);
      data[i] ^= static_cast<unsigned char>(1u << bit);
    }
  }
}

}  // namespace
}  // namespace memento::checkpoint
