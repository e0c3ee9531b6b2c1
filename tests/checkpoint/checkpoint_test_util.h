// Shared by the checkpoint tests: a scratch directory and a registry over every kind of state,
// filled deterministically from a seed so that a loaded checkpoint can be compared bit for bit.
#pragma once

#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <barrier>
#include <cstdint>
#include <cstring>
#include <exception>
#include <filesystem>
#include <fstream>
#include <limits>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "checkpoint/hdf5_checkpoint.h"
#include "checkpoint/state_registry.h"

namespace memento::checkpoint::test_util {

namespace fs = std::filesystem;

// A fresh directory named after the running test, removed afterwards.
class ScratchDir {
 public:
  ScratchDir() {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    path_ = fs::temp_directory_path() / ("memento_ckpt_" + std::string(info->test_suite_name()) +
                                         "_" + info->name() + "_" + std::to_string(::getpid()));
    fs::remove_all(path_);
    fs::create_directories(path_);
  }
  ~ScratchDir() {
    std::error_code ignored;
    fs::remove_all(path_, ignored);
  }
  std::string str() const { return path_.string(); }
  std::string operator/(const std::string& name) const { return (path_ / name).string(); }

 private:
  fs::path path_;
};

inline void fill_random_bytes(void* data, size_t bytes, uint64_t seed) {
  std::mt19937_64 rng(seed);
  auto* p = static_cast<unsigned char*>(data);
  size_t i = 0;
  for (; i + 8 <= bytes; i += 8) {
    const uint64_t word = rng();
    std::memcpy(p + i, &word, 8);
  }
  for (; i < bytes; ++i) p[i] = static_cast<unsigned char>(rng() >> 56);
}

struct TensorSpec {
  std::string name;
  Shape shape;
  DType dtype;
};

// Every dtype, a 0-d tensor and an empty one, in the groups a trainer uses.
inline std::vector<TensorSpec> all_dtype_specs() {
  return {
      {"model/model.embed_tokens.weight", {32, 16}, DType::kBF16},
      {"model/model.layers.0.self_attn.q_proj.weight", {16, 16}, DType::kF32},
      {"model/model.norm.weight", {16}, DType::kF32},
      {"optim/exp_avg/model.norm.weight", {16}, DType::kF32},
      {"optim/master/model.layers.0.mlp.up_proj.weight", {8, 4, 3}, DType::kF64},
      {"fp8/amax_history/e4m3", {5, 7}, DType::kF8E4M3},
      {"fp8/amax_history/e5m2", {7}, DType::kF8E5M2},
      {"model/half", {3, 5}, DType::kF16},
      {"state/rng/counters", {4}, DType::kI64},
      {"state/data/cursor", {2, 3}, DType::kI32},
      {"state/tokens_u16", {9}, DType::kU16},
      {"state/scalar_tensor", {}, DType::kF32},
      {"state/empty", {0, 4}, DType::kF32},
  };
}

// Owns the state a registry points at. Not movable: the registry holds its addresses.
class TestState {
 public:
  TestState(uint64_t seed, const std::vector<TensorSpec>& specs = all_dtype_specs()) {
    for (size_t i = 0; i < specs.size(); ++i) {
      tensors.push_back(Tensor::empty(specs[i].shape, specs[i].dtype));
      fill_random_bytes(tensors.back().view().raw(), tensors.back().bytes(), seed * 1000 + i);
      registry.add_tensor(specs[i].name, tensors.back());
    }
    std::mt19937_64 rng(seed);
    step = static_cast<int64_t>(rng() >> 1);
    min_int = std::numeric_limits<int64_t>::min() + static_cast<int64_t>(seed);
    const uint64_t nan_bits = 0x7FF4000000000000ull | (seed & 0xFFFF);  // NaN with a payload
    std::memcpy(&nan_payload, &nan_bits, sizeof(nan_payload));
    lr = 3e-4 * static_cast<double>(seed);
    negative_zero = seed % 2 ? -0.0 : 0.0;
    config = "model:\n  dim: " + std::to_string(seed) + "\n  name: \"Llama — ünïcode\"\n";
    big_string.assign(200000, 'x');
    big_string[seed % big_string.size()] = 'y';
    empty_string = seed % 2 ? "" : "not empty";
    registry.add_int("state/step", &step);
    registry.add_int("state/min_int", &min_int);
    registry.add_double("state/lr", &lr);
    registry.add_double("state/nan_payload", &nan_payload);
    registry.add_double("state/negative_zero", &negative_zero);
    registry.add_string("meta/config", &config);
    registry.add_string("meta/big", &big_string);
    registry.add_string("meta/empty", &empty_string);
  }
  TestState(const TestState&) = delete;
  TestState& operator=(const TestState&) = delete;

  std::vector<Tensor> tensors;
  int64_t step = 0, min_int = 0;
  double lr = 0, nan_payload = 0, negative_zero = 0;
  std::string config, big_string, empty_string;
  StateRegistry registry;
};

// Bit-for-bit equality of every entry of two registries with the same names.
inline void expect_identical(const StateRegistry& a, const StateRegistry& b) {
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    const StateEntry& x = a.entries()[i];
    const StateEntry& y = b.entries()[i];
    ASSERT_EQ(x.name, y.name);
    switch (x.kind) {
      case EntryKind::kTensor:
        ASSERT_EQ(x.tensor.bytes(), y.tensor.bytes()) << x.name;
        if (x.tensor.bytes() > 0) {
          EXPECT_EQ(std::memcmp(x.tensor.raw(), y.tensor.raw(), x.tensor.bytes()), 0) << x.name;
        }
        break;
      case EntryKind::kInt:
        EXPECT_EQ(*x.int_value, *y.int_value) << x.name;
        break;
      case EntryKind::kDouble:
        EXPECT_EQ(std::memcmp(x.double_value, y.double_value, sizeof(double)), 0) << x.name;
        break;
      case EntryKind::kString:
        EXPECT_EQ(*x.string_value, *y.string_value) << x.name;
        break;
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Simulated ranks: as ZeRO-1 shards its flat buffers, rank r owns elements
// [bounds[r], bounds[r + 1]) of the concatenation of all tensors (in registration order).

// Elements of all tensors of `registry` together.
inline int64_t total_elements(const StateRegistry& registry) {
  int64_t total = 0;
  for (const StateEntry& e : registry) {
    if (e.kind == EntryKind::kTensor) total += e.tensor.numel();
  }
  return total;
}

// world + 1 cut points splitting `total` elements as evenly as possible.
inline std::vector<int64_t> even_bounds(int64_t total, int world) {
  std::vector<int64_t> bounds;
  for (int r = 0; r <= world; ++r) bounds.push_back(total * r / world);
  return bounds;
}

// Rank `rank`'s registry over the whole tensors of `full`: the slice of each tensor in the rank's
// range (empty slices too, unless skip_empty: then the rank file lacks that tensor, as when the
// trainer skips them), and every scalar and string.
inline StateRegistry shard_of(const StateRegistry& full, const std::vector<int64_t>& bounds,
                              int rank, bool skip_empty = false) {
  StateRegistry shard;
  int64_t at = 0;  // where the tensor starts in the concatenation
  for (const StateEntry& e : full) {
    switch (e.kind) {
      case EntryKind::kTensor: {
        const int64_t n = e.tensor.numel();
        const int64_t begin = std::clamp(bounds[rank] - at, int64_t{0}, n);
        const int64_t end = std::clamp(bounds[rank + 1] - at, begin, n);
        at += n;
        if (skip_empty && begin == end && n > 0) break;
        const TensorView flat = e.tensor.reshape(Shape{n});
        shard.add_tensor_slice(e.name, flat.flat_range(begin, Shape{end - begin}), e.tensor.shape(),
                               begin);
        break;
      }
      case EntryKind::kInt:
        shard.add_int(e.name, e.int_value);
        break;
      case EntryKind::kDouble:
        shard.add_double(e.name, e.double_value);
        break;
      case EntryKind::kString:
        shard.add_string(e.name, e.string_value);
        break;
    }
  }
  return shard;
}

// Saves registries[r] as rank r of registries.size() ranks, each on its own thread, with a
// std::barrier as the communicator's barrier. Returns each rank's error message ("" if none).
inline std::vector<std::string> save_on_threads(const std::vector<StateRegistry>& registries,
                                                const std::string& root, int64_t step) {
  const int world = static_cast<int>(registries.size());
  std::barrier<> sync(world);
  std::vector<std::string> errors(world);
  std::vector<std::thread> ranks;
  for (int r = 0; r < world; ++r) {
    ranks.emplace_back([&, r] {
      try {
        save_checkpoint(registries[r], root, step, r, world, [&] { sync.arrive_and_wait(); });
      } catch (const std::exception& e) {
        errors[r] = e.what();
      }
    });
  }
  for (std::thread& t : ranks) t.join();
  return errors;
}

// Loads `dir` into the whole tensors of `into` as `world` ranks would, each its own shard.
inline void load_as_ranks(const StateRegistry& into, const std::string& dir, int world,
                          const std::vector<int64_t>& bounds) {
  for (int r = 0; r < world; ++r) load_checkpoint(shard_of(into, bounds, r), dir, r);
}

// The message of the CheckpointError that `fn` throws; fails the test when it throws none.
template <typename Fn>
std::string error_of(Fn&& fn) {
  try {
    fn();
  } catch (const CheckpointError& e) {
    return e.what();
  }
  ADD_FAILURE() << "no CheckpointError thrown";
  return "";
}

// Flips bit 4 of the byte at `offset` of `file`, in place.
inline void flip_byte(const std::string& file, uint64_t offset) {
  std::fstream f(file, std::ios::in | std::ios::out | std::ios::binary);
  ASSERT_TRUE(f.good());
  f.seekg(static_cast<std::streamoff>(offset));
  char byte = 0;
  f.read(&byte, 1);
  byte = static_cast<char>(byte ^ 0x10);
  f.seekp(static_cast<std::streamoff>(offset));
  f.write(&byte, 1);
}

}  // namespace memento::checkpoint::test_util
