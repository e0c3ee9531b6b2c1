#include "core/data/sampler.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <sstream>

#include "core/error.h"
#include "core/rng.h"

namespace memento {
namespace {

constexpr std::string_view kTrainOrderStream = "memento.data.train_order";

// splitmix64's finaliser: a strong 64-bit mixer for the Feistel round function.
uint64_t mix64(uint64_t z) {
  z ^= z >> 30;
  z *= 0xBF58476D1CE4E5B9ull;
  z ^= z >> 27;
  z *= 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

std::string too_short(const TokenDataset& d, int64_t T) {
  return detail::concat(d.path(), ": ", d.size(), " tokens is too short for one window of seq_len ",
                        T, " (needs ", T + 1, " tokens)");
}

}  // namespace

TokenWindows::TokenWindows(const TokenDataset* dataset, int64_t begin, int64_t end, int64_t T)
    : dataset_(dataset), begin_(begin), end_(end), T_(T) {
  MEMENTO_CHECK(dataset != nullptr && T >= 1 && 0 <= begin && begin <= end &&
                end <= dataset->size());
  count_ = end - begin >= T + 1 ? (end - begin - 1) / T : 0;
}

void TokenWindows::read(int64_t w, int32_t* out) const {
  MEMENTO_CHECK(0 <= w && w < count_, "window ", w, " of ", count_);
  dataset_->read(begin_ + w * T_, T_ + 1, out);
}

EpochPermutation::EpochPermutation(int64_t n, uint64_t seed, int64_t epoch) : n_(n) {
  MEMENTO_CHECK(n >= 1 && epoch >= 0);
  const int bits = std::bit_width(static_cast<uint64_t>(n - 1));  // domain 2^bits >= n
  half_bits_ = std::max(1, (bits + 1) / 2);
  half_mask_ = (uint64_t{1} << half_bits_) - 1;
  const uint64_t stream = stream_id(kTrainOrderStream);
  for (int j = 0; j < kRounds / 2; ++j) {
    const auto w = philox4x32(seed, stream, static_cast<uint64_t>(epoch) * 4 + j);
    keys_[2 * j] = (uint64_t{w[0]} << 32) | w[1];
    keys_[2 * j + 1] = (uint64_t{w[2]} << 32) | w[3];
  }
}

uint64_t EpochPermutation::encrypt(uint64_t x) const {
  uint64_t left = x >> half_bits_;
  uint64_t right = x & half_mask_;
  for (uint64_t key : keys_) {
    const uint64_t next = left ^ (mix64(right ^ key) & half_mask_);
    left = right;
    right = next;
  }
  return (left << half_bits_) | right;
}

int64_t EpochPermutation::operator()(int64_t i) const {
  MEMENTO_CHECK(0 <= i && i < n_, "index ", i, " outside [0, ", n_, ")");
  // Cycle walking: the domain is at most 4n, so a few steps on average; the result stays a
  // bijection on [0, n) because encrypt is a bijection on the whole domain.
  uint64_t y = encrypt(static_cast<uint64_t>(i));
  while (y >= static_cast<uint64_t>(n_)) y = encrypt(y);
  return static_cast<int64_t>(y);
}

DataLoader::DataLoader(TokenDataset train, std::optional<TokenDataset> val, double val_fraction,
                       int64_t seq_len, uint64_t seed)
    : train_(std::make_unique<TokenDataset>(std::move(train))), T_(seq_len), seed_(seed) {
  MEMENTO_EXPECT(seq_len >= 1, DataError, train_->path(), ": seq_len must be >= 1, got ", seq_len);
  const int64_t T = seq_len;
  const int64_t N = train_->size();
  MEMENTO_EXPECT(N >= T + 1, DataError, too_short(*train_, T));
  if (val.has_value()) {
    val_ = std::make_unique<TokenDataset>(std::move(*val));
    MEMENTO_EXPECT(val_->size() >= T + 1, DataError, too_short(*val_, T));
    train_windows_ = TokenWindows(train_.get(), 0, N, T);
    val_windows_ = TokenWindows(val_.get(), 0, val_->size(), T);
  } else if (val_fraction > 0) {
    MEMENTO_EXPECT(val_fraction < 1, DataError, train_->path(), ": val_fraction ", val_fraction,
                   " must be in [0, 1)");
    // Validation takes the last n_val whole windows; training takes the whole windows before
    // them, with no shared token, so at most one window is lost at the boundary.
    const int64_t total = (N - 1) / T;
    const int64_t n_val = std::max<int64_t>(1, std::llround(val_fraction * total));
    const int64_t split = N - (n_val * T + 1);
    MEMENTO_EXPECT(split >= T + 1, DataError, train_->path(), ": ", N,
                   " tokens is too short to split into train and validation windows of seq_len ", T,
                   " with val_fraction ", val_fraction, " (needs ", n_val * T + T + 2, " tokens)");
    train_windows_ = TokenWindows(train_.get(), 0, split, T);
    val_windows_ = TokenWindows(train_.get(), split, N, T);
  } else {
    train_windows_ = TokenWindows(train_.get(), 0, N, T);
  }
}

DataCursor DataLoader::advanced(DataCursor start, int64_t n) const {
  MEMENTO_CHECK(n >= 0);
  const int64_t W = num_train_windows();
  const int64_t at = start.index + n;
  return {start.epoch + at / W, at % W};
}

void DataLoader::read_train_samples(DataCursor start, int64_t skip, int64_t n_sequences,
                                    int32_t* tokens) const {
  MEMENTO_CHECK(skip >= 0 && n_sequences >= 0);
  const int64_t W = num_train_windows();
  std::optional<EpochPermutation> order;
  int64_t order_epoch = -1;
  for (int64_t i = 0; i < n_sequences; ++i) {
    const DataCursor c = advanced(start, skip + i);
    if (c.epoch != order_epoch) {
      order.emplace(W, seed_, c.epoch);
      order_epoch = c.epoch;
    }
    train_windows_.read((*order)(c.index), tokens + i * (T_ + 1));
  }
}

void DataLoader::next_train_batch(int64_t n_sequences, int32_t* tokens) {
  read_train_samples(cursor_, 0, n_sequences, tokens);
  skip_train_samples(n_sequences);
}

void DataLoader::skip_train_samples(int64_t n) { cursor_ = advanced(cursor_, n); }

void DataLoader::set_cursor(DataCursor cursor) {
  MEMENTO_EXPECT(cursor.epoch >= 0 && cursor.index >= 0 && cursor.index < num_train_windows(),
                 DataError, train_->path(), ": data cursor (epoch ", cursor.epoch, ", index ",
                 cursor.index, ") does not fit ", num_train_windows(),
                 " train windows; was the checkpoint made with another dataset or seq_len?");
  cursor_ = cursor;
}

void DataLoader::val_batch(int64_t batch_index, int64_t n_sequences, int32_t* tokens) const {
  const int64_t V = num_val_windows();
  MEMENTO_EXPECT(V > 0, DataError, train_->path(),
                 ": no validation windows (no val dataset and val_fraction 0)");
  MEMENTO_CHECK(batch_index >= 0 && n_sequences >= 0);
  for (int64_t i = 0; i < n_sequences; ++i) {
    val_windows_.read((batch_index * n_sequences + i) % V, tokens + i * (T_ + 1));
  }
}

std::string DataLoader::describe() const {
  std::ostringstream os;
  os << "data: " << num_train_windows() << " train windows from " << train_->path() << ", "
     << num_val_windows() << " val windows from " << (val_ ? val_->path() : train_->path())
     << (val_ ? "" : " (tail split)") << ", T=" << T_ << ", seed " << seed_ << ", cursor (epoch "
     << cursor_.epoch << ", index " << cursor_.index << ")";
  return os.str();
}

}  // namespace memento
