#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <numeric>
#include <set>

#include "core/data/sampler.h"
#include "core/error.h"

namespace memento {
namespace {

namespace fs = std::filesystem;

class SamplerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("memento_sampler_test_" + std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  // A shard whose token at position p is p, so a window's first token tells where it starts.
  std::string positions(const std::string& name, int n) const {
    std::vector<uint16_t> tokens(static_cast<size_t>(n));
    std::iota(tokens.begin(), tokens.end(), uint16_t{0});
    const std::string p = (dir_ / name).string();
    write_llmc_shard(p, tokens);
    return p;
  }

  fs::path dir_;
};

std::vector<int32_t> batch(DataLoader& loader, int64_t n) {
  std::vector<int32_t> out(static_cast<size_t>(n * (loader.seq_len() + 1)));
  loader.next_train_batch(n, out.data());
  return out;
}

TEST_F(SamplerTest, WindowsOverlapByOneTokenAtStrideT) {
  const TokenDataset d(positions("p.bin", 100));
  const TokenWindows w(&d, 0, d.size(), 8);
  EXPECT_EQ(w.size(), 12);  // (100 - 1) / 8
  std::vector<int32_t> win(9);
  w.read(11, win.data());
  EXPECT_EQ(win.front(), 88);
  EXPECT_EQ(win.back(), 96);
  EXPECT_EQ(TokenWindows(&d, 10, 19, 8).size(), 1);
  EXPECT_EQ(TokenWindows(&d, 10, 18, 8).size(), 0);
}

TEST(EpochPermutation, IsABijectionForManySizes) {
  for (int64_t n : {1, 2, 3, 4, 5, 7, 8, 9, 16, 17, 100, 255, 256, 257, 1000, 4097, 65536}) {
    const EpochPermutation perm(n, 1234, 3);
    std::vector<char> seen(static_cast<size_t>(n), 0);
    for (int64_t i = 0; i < n; ++i) {
      const int64_t j = perm(i);
      ASSERT_TRUE(0 <= j && j < n) << "n=" << n;
      ASSERT_FALSE(seen[j]) << "n=" << n << " repeats " << j;
      seen[j] = 1;
    }
  }
}

TEST(EpochPermutation, DependsOnlyOnSeedAndEpoch) {
  const int64_t n = 1000;
  auto order = [&](uint64_t seed, int64_t epoch) {
    const EpochPermutation perm(n, seed, epoch);
    std::vector<int64_t> v;
    for (int64_t i = 0; i < n; ++i) v.push_back(perm(i));
    return v;
  };
  EXPECT_EQ(order(7, 2), order(7, 2));
  EXPECT_NE(order(7, 2), order(7, 3));
  EXPECT_NE(order(7, 2), order(8, 2));
  // Shuffled: few fixed points and not the identity.
  const auto v = order(7, 0);
  int fixed = 0;
  for (int64_t i = 0; i < n; ++i) fixed += v[i] == i;
  EXPECT_LT(fixed, 10);
}

TEST_F(SamplerTest, EachEpochVisitsEveryWindowOnceAndCursorAdvances) {
  DataLoader loader(TokenDataset(positions("p.bin", 1001)), std::nullopt, 0.0, 10, 42);
  ASSERT_EQ(loader.num_train_windows(), 100);
  EXPECT_EQ(loader.num_val_windows(), 0);
  for (int64_t epoch = 0; epoch < 3; ++epoch) {
    std::set<int32_t> starts;
    for (int b = 0; b < 25; ++b) {
      const auto t = batch(loader, 4);
      for (int s = 0; s < 4; ++s) {
        EXPECT_EQ(t[s * 11 + 10], t[s * 11] + 10);  // a window is 11 consecutive positions
        starts.insert(t[s * 11]);
      }
    }
    EXPECT_EQ(starts.size(), 100u);
    EXPECT_EQ(*starts.rbegin(), 990);
    EXPECT_EQ(loader.cursor(), (DataCursor{epoch + 1, 0}));
  }
  std::vector<int32_t> a(11 * 3);
  EXPECT_THROW(loader.val_batch(0, 3, a.data()), DataError);
}

TEST_F(SamplerTest, SameSeedSameBatchesAndResumeMatchesUninterruptedRun) {
  const std::string p = positions("p.bin", 2000);
  DataLoader full(TokenDataset(p), std::nullopt, 0.1, 16, 9);
  DataLoader other_seed(TokenDataset(p), std::nullopt, 0.1, 16, 10);
  std::vector<std::vector<int32_t>> run;
  DataCursor saved;
  for (int step = 0; step < 40; ++step) {  // 40 * 7 samples: more than two epochs
    if (step == 13) saved = full.cursor();
    run.push_back(batch(full, 7));
  }
  EXPECT_NE(batch(other_seed, 7), run[0]);

  DataLoader resumed(TokenDataset(p), std::nullopt, 0.1, 16, 9);
  resumed.set_cursor(saved);
  for (int step = 13; step < 40; ++step) ASSERT_EQ(batch(resumed, 7), run[step]) << step;
  EXPECT_EQ(resumed.cursor(), full.cursor());
  EXPECT_GE(full.cursor().epoch, 2);
}

TEST_F(SamplerTest, SampleDependsOnlyOnEpochAndIndexAndRankSlicesCompose) {
  const std::string p = positions("p.bin", 3000);
  DataLoader loader(TokenDataset(p), std::nullopt, 0.0, 32, 5);
  const int64_t W = loader.num_train_windows();
  loader.set_cursor({1, W - 3});  // the global batch crosses into epoch 2
  const int64_t B = 8, R = 4;
  std::vector<int32_t> slices;
  for (int64_t r = 0; r < R; ++r) {
    std::vector<int32_t> part(static_cast<size_t>(B / R * 33));
    loader.read_train_samples(loader.cursor(), r * B / R, B / R, part.data());
    slices.insert(slices.end(), part.begin(), part.end());
  }
  const DataCursor start = loader.cursor();
  const auto global = batch(loader, B);
  EXPECT_EQ(slices, global);
  EXPECT_EQ(loader.cursor(), (DataCursor{2, 5}));
  // Sample i of the batch is (epoch, index) = advanced(start, i), read on its own.
  for (int64_t i = 0; i < B; ++i) {
    std::vector<int32_t> one(33);
    loader.read_train_samples(loader.advanced(start, i), 0, 1, one.data());
    EXPECT_TRUE(std::equal(one.begin(), one.end(), global.begin() + i * 33)) << i;
  }
}

TEST_F(SamplerTest, TailValidationIsDisjointFromTrainingAndInOrder) {
  DataLoader loader(TokenDataset(positions("p.bin", 1000)), std::nullopt, 0.1, 8, 3);
  const int64_t W = loader.num_train_windows(), V = loader.num_val_windows();
  EXPECT_EQ(V, 12);  // round(0.1 * 124)
  EXPECT_GE(W + V, 123);
  int32_t max_train = -1;
  for (int64_t b = 0; b < W; ++b) {
    const auto t = batch(loader, 1);
    max_train = std::max(max_train, t.back());
  }
  std::vector<int32_t> val(static_cast<size_t>(V * 9));
  loader.val_batch(0, V, val.data());
  EXPECT_GT(val.front(), max_train);  // no token in both sets
  EXPECT_EQ(val.back(), 999);
  for (int64_t i = 1; i < V; ++i) EXPECT_EQ(val[i * 9], val[(i - 1) * 9] + 8);
  std::vector<int32_t> wrapped(9 * 5);
  loader.val_batch(2, 5, wrapped.data());  // windows 10, 11, 0, 1, 2
  EXPECT_EQ(wrapped[2 * 9], val[0]);
  EXPECT_EQ(wrapped[0], val[10 * 9]);
}

TEST_F(SamplerTest, SeparateValidationDataset) {
  DataLoader loader(TokenDataset(positions("t.bin", 500)), TokenDataset(positions("v.bin", 100)),
                    0.5, 10, 1);
  EXPECT_EQ(loader.num_train_windows(), 49);
  EXPECT_EQ(loader.num_val_windows(), 9);
  std::vector<int32_t> val(11 * 2);
  loader.val_batch(4, 2, val.data());  // windows 8, 0
  EXPECT_EQ(val[0], 80);
  EXPECT_EQ(val[11], 0);
}

TEST_F(SamplerTest, TooShortDatasetAndBadCursorAreDataErrors) {
  const std::string p = positions("short.bin", 10);
  try {
    DataLoader loader(TokenDataset(p), std::nullopt, 0.0, 64, 1);
    FAIL() << "expected DataError";
  } catch (const DataError& e) {
    EXPECT_EQ(std::string(e.what()),
              p + ": 10 tokens is too short for one window of seq_len 64 (needs 65 tokens)");
  }
  // Long enough for one window, not for a train and a val window.
  EXPECT_THROW(DataLoader(TokenDataset(positions("q.bin", 20)), std::nullopt, 0.1, 16, 1),
               DataError);
  DataLoader loader(TokenDataset(positions("ok.bin", 100)), std::nullopt, 0.0, 9, 1);
  EXPECT_THROW(loader.set_cursor({0, 11}), DataError);
  EXPECT_THROW(loader.set_cursor({-1, 0}), DataError);
  EXPECT_NO_THROW(loader.set_cursor({5, 10}));
}

}  // namespace
}  // namespace memento
