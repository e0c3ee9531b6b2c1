// Deterministic sampling of training windows. The data order depends only on (seed, epoch,
// sample index) (ARCHITECTURE contract 7): a run resumed from a DataCursor sees exactly the
// windows it would have seen without the interruption, whatever the parallel layout.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "core/data/token_dataset.h"

namespace memento {

// Tokens [begin, end) of a dataset cut into windows of T + 1 tokens at stride T: window w is
// tokens begin + w*T .. begin + w*T + T inclusive; inputs are window[0, T), targets [1, T + 1).
// A non-owning view; the dataset must outlive it.
class TokenWindows {
 public:
  TokenWindows() = default;
  TokenWindows(const TokenDataset* dataset, int64_t begin, int64_t end, int64_t T);

  int64_t size() const { return count_; }  // number of whole windows
  int64_t seq_len() const { return T_; }
  int64_t begin() const { return begin_; }
  int64_t end() const { return end_; }
  // Copies window w (T + 1 tokens) into out.
  void read(int64_t w, int32_t* out) const;

 private:
  const TokenDataset* dataset_ = nullptr;
  int64_t begin_ = 0;
  int64_t end_ = 0;
  int64_t T_ = 1;
  int64_t count_ = 0;
};

// A bijection on [0, n) keyed by (seed, epoch): a 6-round Feistel network on the smallest
// even-bit power of two >= n, cycle-walked back into [0, n). O(1) memory, ~O(1) per lookup.
class EpochPermutation {
 public:
  EpochPermutation(int64_t n, uint64_t seed, int64_t epoch);
  int64_t operator()(int64_t i) const;

 private:
  static constexpr int kRounds = 6;
  uint64_t encrypt(uint64_t x) const;

  int64_t n_ = 0;
  int half_bits_ = 1;
  uint64_t half_mask_ = 1;
  uint64_t keys_[kRounds] = {};
};

// Where the training stream stands: sample `index` of epoch `epoch`. This is what checkpoints
// store. Invariant: 0 <= index < num_train_windows().
struct DataCursor {
  int64_t epoch = 0;
  int64_t index = 0;
  friend bool operator==(const DataCursor&, const DataCursor&) = default;
};

// Training and validation batches of windows of seq_len + 1 tokens.
//
// Train order: epoch e visits every train window once, in the order EpochPermutation(n, seed,
// e); the cursor moves to (e + 1, 0) when an epoch is exhausted. Sample i of a batch that starts
// at cursor c is sample c.index + i of the stream (carrying into the next epochs), so data
// parallelism composes as "global batch, then this rank's slice": rank r of R with a global
// batch of B reads read_train_samples(cursor(), r * B / R, B / R, out), then every rank calls
// skip_train_samples(B).
//
// Validation: the val dataset's windows in order, or, without one, the last val_fraction of
// the train dataset's windows. The split is by token, so no token is in both sets.
class DataLoader {
 public:
  // seq_len is T. val_fraction in [0, 1) is used only when val is empty; 0 means no validation.
  // Throws DataError naming the file, T and the token count when a dataset (or a side of the
  // split) is too short for one window.
  DataLoader(TokenDataset train, std::optional<TokenDataset> val, double val_fraction,
             int64_t seq_len, uint64_t seed);

  int64_t seq_len() const { return T_; }
  uint64_t seed() const { return seed_; }
  int64_t num_train_windows() const { return train_windows_.size(); }
  int64_t num_val_windows() const { return val_windows_.size(); }
  const TokenDataset& train_dataset() const { return *train_; }

  // Writes n_sequences x (T + 1) tokens (row-major) and advances the cursor by n_sequences.
  void next_train_batch(int64_t n_sequences, int32_t* tokens);
  // Writes samples skip .. skip + n_sequences - 1 after `start` without moving the cursor.
  void read_train_samples(DataCursor start, int64_t skip, int64_t n_sequences,
                          int32_t* tokens) const;
  // Advances the cursor by n samples.
  void skip_train_samples(int64_t n);

  DataCursor cursor() const { return cursor_; }
  // The live cursor, for the state registry: saves read it, loads write it (then validate it with
  // set_cursor(cursor())).
  DataCursor& cursor_state() { return cursor_; }
  // Restores a cursor from a checkpoint; throws DataError when it does not fit this dataset.
  void set_cursor(DataCursor cursor);
  // The cursor n samples after `start`.
  DataCursor advanced(DataCursor start, int64_t n) const;

  // Validation batch batch_index: windows batch_index * n_sequences + i (mod num_val_windows),
  // in order. Throws DataError when there is no validation data.
  void val_batch(int64_t batch_index, int64_t n_sequences, int32_t* tokens) const;

  // One line: windows per side, T, seed and the cursor.
  std::string describe() const;

 private:
  // Heap-held so that windows keep pointing at them when the loader moves.
  std::unique_ptr<TokenDataset> train_;
  std::unique_ptr<TokenDataset> val_;
  int64_t T_ = 0;
  uint64_t seed_ = 0;
  TokenWindows train_windows_;
  TokenWindows val_windows_;
  DataCursor cursor_;
};

}  // namespace memento
