// Checkpoints saved by several ranks, each holding slices of the tensors, and loaded by any
// number of ranks (resharding). Ranks are threads of this process that synchronize through a
// std::barrier, as they would through a communicator's barrier.
#include <gtest/gtest.h>

// The layout test reads the files with the plain HDF5 C API, as another tool would.
#if __has_include(<hdf5.h>)
#include <hdf5.h>
#else
#include <hdf5/serial/hdf5.h>
#endif

#include <fstream>
#include <set>

#include "checkpoint/checkpoint_dir.h"
#include "checkpoint/crc32c.h"
#include "checkpoint/hdf5_checkpoint.h"
#include "tests/checkpoint/checkpoint_test_util.h"

namespace memento::checkpoint {
namespace {

using test_util::error_of;
using test_util::even_bounds;
using test_util::expect_identical;
using test_util::flip_byte;
using test_util::load_as_ranks;
using test_util::save_on_threads;
using test_util::ScratchDir;
using test_util::shard_of;
using test_util::TensorSpec;
using test_util::TestState;
using test_util::total_elements;
namespace fs = std::filesystem;

std::string rank_file(const std::string& dir, int rank) {
  return join_path(dir, rank_file_name(rank));
}

std::vector<StateRegistry> shards(const StateRegistry& full, const std::vector<int64_t>& bounds,
                                  bool skip_empty = false) {
  std::vector<StateRegistry> out;
  for (size_t r = 0; r + 1 < bounds.size(); ++r) {
    out.push_back(shard_of(full, bounds, static_cast<int>(r), skip_empty));
  }
  return out;
}

void save_as_ranks(const StateRegistry& full, const std::string& root, int64_t step,
                   const std::vector<int64_t>& bounds, bool skip_empty = false) {
  const auto errors = save_on_threads(shards(full, bounds, skip_empty), root, step);
  for (size_t r = 0; r < errors.size(); ++r) EXPECT_EQ(errors[r], "") << "rank " << r;
}

// Uneven cuts for 2 ranks: through the middle of the first tensor's rows.
std::vector<int64_t> uneven_two(int64_t total) { return {0, 389, total}; }

TEST(MultiRankCheckpoint, SavedByTwoRanksLoadsBitIdenticalOnOneToFourRanks) {
  for (const bool skip_empty : {false, true}) {
    SCOPED_TRACE(skip_empty ? "empty slices skipped" : "empty slices saved");
    ScratchDir root;
    TestState saved(1);
    const int64_t total = total_elements(saved.registry);
    save_as_ranks(saved.registry, root.str(), 100, uneven_two(total), skip_empty);
    const std::string dir = root / "step_000000100";
    ASSERT_EQ(find_latest(root.str()), dir);
    EXPECT_TRUE(is_complete_checkpoint(dir));
    for (int r = 0; r < 2; ++r) {
      const CheckpointInfo info = read_checkpoint_info(dir, r);
      EXPECT_EQ(info.world, 2);
      EXPECT_EQ(info.rank, r);
      EXPECT_EQ(info.step, 100);
    }
    for (int world = 1; world <= 4; ++world) {
      SCOPED_TRACE("loaded by " + std::to_string(world) + " ranks");
      TestState loaded(2);
      load_as_ranks(loaded.registry, dir, world, even_bounds(total, world));
      expect_identical(saved.registry, loaded.registry);
    }
    // A rank that holds whole tensors (e.g. every parameter) assembles them from both files.
    TestState whole(3);
    load_checkpoint(whole.registry, dir, 1);
    expect_identical(saved.registry, whole.registry);
  }
}

TEST(MultiRankCheckpoint, ManyLayoutsRoundTrip) {
  // Ranges with empty ranks, ranges ending exactly on tensor boundaries, single elements.
  TestState saved(4);
  const int64_t total = total_elements(saved.registry);  // 973
  const std::vector<std::vector<int64_t>> layouts = {
      {0, total},
      {0, 0, total},                   // rank 0 holds nothing
      {0, 512, 768, total},            // cuts on tensor boundaries
      {0, 1, 2, 900, total},           // one-element ranks
      {0, 300, 300, 301, 700, total},  // an empty rank in the middle
      even_bounds(total, 7),
  };
  for (size_t i = 0; i < layouts.size(); ++i) {
    SCOPED_TRACE("layout " + std::to_string(i));
    ScratchDir root;
    save_as_ranks(saved.registry, root.str(), 7, layouts[i]);
    const std::string dir = root / "step_000000007";
    for (size_t j = 0; j < layouts.size(); ++j) {
      SCOPED_TRACE("loaded as layout " + std::to_string(j));
      TestState loaded(5);
      load_as_ranks(loaded.registry, dir, static_cast<int>(layouts[j].size() - 1), layouts[j]);
      expect_identical(saved.registry, loaded.registry);
    }
  }
}

TEST(MultiRankCheckpoint, LargeTensorsReshardThroughBoundedStaging) {
  // 2-D and 3-D tensors large enough that the parts outside a rank's range are checksummed in
  // several staging chunks, with cuts in the middle of rows.
  const std::vector<TensorSpec> specs = {{"model/embed", {3000, 1500}, DType::kF32},
                                         {"optim/exp_avg/w", {7, 301, 1013}, DType::kBF16}};
  TestState saved(6, specs);
  const int64_t total = total_elements(saved.registry);
  ScratchDir root;
  save_as_ranks(saved.registry, root.str(), 1, {0, 1234567, 2345678, total});
  TestState loaded(7, specs);
  load_as_ranks(loaded.registry, root / "step_000000001", 2, {0, 3456789, total});
  expect_identical(saved.registry, loaded.registry);
}

TEST(MultiRankCheckpoint, ResumingWithTheSameLayoutReadsOnlyItsOwnFile) {
  ScratchDir root;
  TestState saved(1);
  const auto bounds = uneven_two(total_elements(saved.registry));
  save_as_ranks(saved.registry, root.str(), 100, bounds);
  const std::string dir = root / "step_000000100";
  const std::string file1 = rank_file(dir, 1);
  flip_byte(file1, detail::tensor_file_offset(file1, "model/model.embed_tokens.weight") + 3);

  TestState loaded(2);
  load_checkpoint(shard_of(loaded.registry, bounds, 0), dir, 0);  // rank 1's file is not read
  EXPECT_EQ(error_of([&] {
              load_checkpoint(shard_of(loaded.registry, bounds, 1), dir, 1);
            }).rfind(file1 + ": tensor model/model.embed_tokens.weight: checksum mismatch", 0),
            0u);
}

TEST(MultiRankCheckpoint, CorruptedSliceIsReportedWithFileAndTensor) {
  ScratchDir root;
  TestState saved(1);
  save_as_ranks(saved.registry, root.str(), 100, uneven_two(total_elements(saved.registry)));
  const std::string dir = root / "step_000000100";
  const std::string file1 = rank_file(dir, 1);
  // model/model.embed_tokens.weight is [32, 16]: rank 1 holds its elements [389, 512).
  flip_byte(file1, detail::tensor_file_offset(file1, "model/model.embed_tokens.weight") + 2 * 100);
  TestState loaded(2);
  const std::string message = error_of([&] { load_checkpoint(loaded.registry, dir); });
  EXPECT_EQ(message.rfind(file1 + ": tensor model/model.embed_tokens.weight: checksum mismatch "
                                  "(stored 0x",
                          0),
            0u)
      << message;
  // Also when only the elements outside the requested range are corrupted: the whole stored
  // slice is verified.
  StateRegistry first_row;
  Tensor row = Tensor::empty({16}, DType::kBF16);
  first_row.add_tensor_slice("model/model.embed_tokens.weight", row, {32, 16}, 400);
  EXPECT_NE(error_of([&] {
              load_checkpoint(first_row, dir, 0, LoadOptions{.allow_unregistered = true});
            }).find("checksum mismatch"),
            std::string::npos);
  EXPECT_EQ(loaded.step, TestState(2).step);  // scalars untouched
}

TEST(MultiRankCheckpoint, MissingRankFileMakesTheCheckpointIncomplete) {
  ScratchDir root;
  TestState first(1), second(2);
  const auto bounds = uneven_two(total_elements(first.registry));
  save_as_ranks(first.registry, root.str(), 100, bounds);
  save_as_ranks(second.registry, root.str(), 200, bounds);
  const std::string dir = root / "step_000000200";
  fs::rename(rank_file(dir, 1), root / "moved.h5");
  EXPECT_FALSE(is_complete_checkpoint(dir));
  EXPECT_EQ(find_latest(root.str()), root / "step_000000100");
  TestState loaded(3);
  EXPECT_EQ(error_of([&] { load_checkpoint(loaded.registry, dir); }),
            rank_file(dir, 1) + ": no such checkpoint file");

  // A rank file of another step or world in its place is no better.
  fs::copy_file(rank_file(root / "step_000000100", 1), rank_file(dir, 1));
  EXPECT_FALSE(is_complete_checkpoint(dir));
  EXPECT_NE(error_of([&] {
              load_checkpoint(loaded.registry, dir);
            }).find(rank_file(dir, 1) + ": holds step 100 of 2 ranks, but rank_00000.h5 step 200"),
            std::string::npos);
  fs::remove(rank_file(dir, 1));
  fs::rename(root / "moved.h5", rank_file(dir, 1));
  EXPECT_TRUE(is_complete_checkpoint(dir));
  EXPECT_EQ(find_latest(root.str()), dir);
}

TEST(MultiRankCheckpoint, ElementsInNoRankFileAreReported) {
  ScratchDir root;
  const std::vector<TensorSpec> specs = {{"model/w", {4, 8}, DType::kF32},
                                         {"optim/exp_avg/x", {10}, DType::kF32}};
  TestState saved(1, specs);
  // Rank 1 does not save its part of optim/exp_avg/x (elements 32..41 of the concatenation).
  std::vector<StateRegistry> registries = shards(saved.registry, {0, 35, 42});
  StateRegistry without;
  for (const StateEntry& e : registries[1]) {
    if (e.name == "optim/exp_avg/x") continue;
    if (e.kind == EntryKind::kTensor) {
      without.add_tensor_slice(e.name, e.tensor.reshape(Shape{e.tensor.numel()}), e.full_shape,
                               e.offset);
    } else if (e.kind == EntryKind::kInt) {
      without.add_int(e.name, e.int_value);
    } else if (e.kind == EntryKind::kDouble) {
      without.add_double(e.name, e.double_value);
    } else {
      without.add_string(e.name, e.string_value);
    }
  }
  registries[1] = std::move(without);
  for (const std::string& error : save_on_threads(registries, root.str(), 5)) {
    EXPECT_EQ(error, "");
  }
  const std::string dir = root / "step_000000005";
  TestState loaded(2, specs);
  EXPECT_EQ(error_of([&] { load_checkpoint(loaded.registry, dir); }),
            dir +
                ": tensor optim/exp_avg/x: elements [3:10] of the saved tensor (shape [10]) are "
                "in no rank file");
  // Rank 0's part alone loads.
  load_checkpoint(shard_of(loaded.registry, {0, 35, 42}, 0), dir, 0);
}

TEST(MultiRankCheckpoint, FullShapeAndDTypeMismatchesNameTheTensor) {
  ScratchDir root;
  const std::vector<TensorSpec> specs = {{"model/w", {4, 8}, DType::kF32},
                                         {"model/b", {8}, DType::kBF16}};
  TestState saved(1, specs);
  save_as_ranks(saved.registry, root.str(), 1, {0, 20, 40});
  const std::string dir = root / "step_000000001";

  TestState transposed(2, {{"model/w", {8, 4}, DType::kF32}, specs[1]});
  EXPECT_EQ(error_of([&] { load_checkpoint(transposed.registry, dir); }),
            rank_file(dir, 0) + ": tensor model/w: expected shape [8, 4], found [4, 8]");
  TestState retyped(2, {specs[0], {"model/b", {8}, DType::kF16}});
  EXPECT_EQ(error_of([&] { load_checkpoint(retyped.registry, dir); }),
            rank_file(dir, 0) + ": tensor model/b: expected dtype f16, found bf16");
  TestState missing(2, {specs[0], specs[1], {"model/c", {2}, DType::kF32}});
  EXPECT_EQ(error_of([&] { load_checkpoint(missing.registry, dir); }),
            dir + ": 1 registered entries are missing from the checkpoint: model/c (f32 [2])");
  TestState fewer(2, {specs[1]});
  EXPECT_NE(error_of([&] {
              load_checkpoint(fewer.registry, dir);
            }).find(dir + ": the checkpoint holds 1 entries that are not registered"),
            std::string::npos);
  load_checkpoint(fewer.registry, dir, 0, LoadOptions{.allow_unregistered = true});
  EXPECT_EQ(std::memcmp(fewer.tensors[0].view().raw(), saved.tensors[1].view().raw(), 16), 0);
}

// What docs/checkpoint-format.md promises a reader: a partial slice is a 1-D dataset with
// full_shape and offset attributes; a tensor is reassembled from every rank file.
TEST(MultiRankCheckpoint, SlicesAreReadableAndReassemblableWithPlainHdf5) {
  ScratchDir root;
  const std::vector<TensorSpec> specs = {{"model/w", {6, 7}, DType::kF32},
                                         {"model/v", {5}, DType::kF64}};
  TestState saved(1, specs);
  save_as_ranks(saved.registry, root.str(), 3, {0, 10, 10, 47});  // rank 1 holds nothing
  const std::string dir = root / "step_000000003";

  std::vector<float> w(42, -1.0f);
  for (int r = 0; r < 3; ++r) {
    const hid_t f = H5Fopen(rank_file(dir, r).c_str(), H5F_ACC_RDONLY, H5P_DEFAULT);
    ASSERT_GE(f, 0);
    int64_t world = 0;
    const hid_t wa = H5Aopen(f, "world", H5P_DEFAULT);
    H5Aread(wa, H5T_NATIVE_INT64, &world);
    H5Aclose(wa);
    EXPECT_EQ(world, 3);
    const hid_t d = H5Dopen2(f, "model/w", H5P_DEFAULT);
    ASSERT_GE(d, 0);
    const hid_t space = H5Dget_space(d);
    ASSERT_EQ(H5Sget_simple_extent_ndims(space), 1);
    hsize_t n = 0;
    H5Sget_simple_extent_dims(space, &n, nullptr);
    ASSERT_GT(H5Aexists(d, "offset"), 0);
    int64_t offset = -1;
    int64_t full_shape[2] = {0, 0};
    uint32_t crc = 0;
    const hid_t oa = H5Aopen(d, "offset", H5P_DEFAULT);
    H5Aread(oa, H5T_NATIVE_INT64, &offset);
    H5Aclose(oa);
    const hid_t fa = H5Aopen(d, "full_shape", H5P_DEFAULT);
    const hid_t fa_space = H5Aget_space(fa);
    EXPECT_EQ(H5Sget_simple_extent_npoints(fa_space), 2);
    H5Sclose(fa_space);
    H5Aread(fa, H5T_NATIVE_INT64, full_shape);
    H5Aclose(fa);
    const hid_t ca = H5Aopen(d, "crc32c", H5P_DEFAULT);
    H5Aread(ca, H5T_NATIVE_UINT32, &crc);
    H5Aclose(ca);
    EXPECT_EQ(full_shape[0], 6);
    EXPECT_EQ(full_shape[1], 7);
    constexpr int64_t kOffsets[] = {0, 10, 10};
    constexpr hsize_t kLengths[] = {10, 0, 32};
    EXPECT_EQ(offset, kOffsets[r]);
    EXPECT_EQ(n, kLengths[r]);
    std::vector<float> part(n);
    if (n > 0) H5Dread(d, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, part.data());
    EXPECT_EQ(crc, crc32c(part.data(), part.size() * sizeof(float)));
    std::copy(part.begin(), part.end(), w.begin() + offset);
    H5Sclose(space);
    H5Dclose(d);
    // model/v lies in rank 2's range: rank 2 stores it whole, with its shape and no slice
    // attributes.
    const hid_t v = H5Dopen2(f, "model/v", H5P_DEFAULT);
    const hid_t v_space = H5Dget_space(v);
    hsize_t v_n = 0;
    H5Sget_simple_extent_dims(v_space, &v_n, nullptr);
    EXPECT_EQ(v_n, r == 2 ? 5u : 0u);
    EXPECT_EQ(H5Aexists(v, "offset") > 0, r != 2);
    H5Sclose(v_space);
    H5Dclose(v);
    H5Fclose(f);
  }
  EXPECT_EQ(std::memcmp(w.data(), saved.tensors[0].view().raw(), w.size() * sizeof(float)), 0);
}

TEST(MultiRankCheckpoint, AFailedRankPublishesNothingAndNoRankHangs) {
  ScratchDir root;
  TestState first(1), second(2);
  const auto bounds = uneven_two(total_elements(first.registry));
  save_as_ranks(first.registry, root.str(), 100, bounds);
  // Rank 1 cannot store its config (a NUL byte); rank 0 can.
  std::string bad_config = std::string("a\0b", 3);
  std::vector<StateRegistry> registries = shards(second.registry, bounds);
  StateRegistry rank1;
  for (const StateEntry& e : registries[1]) {
    if (e.kind == EntryKind::kTensor) {
      rank1.add_tensor_slice(e.name, e.tensor.reshape(Shape{e.tensor.numel()}), e.full_shape,
                             e.offset);
    } else if (e.kind == EntryKind::kInt) {
      rank1.add_int(e.name, e.int_value);
    } else if (e.kind == EntryKind::kDouble) {
      rank1.add_double(e.name, e.double_value);
    } else {
      rank1.add_string(e.name, e.name == "meta/config" ? &bad_config : e.string_value);
    }
  }
  registries[1] = std::move(rank1);
  const auto errors = save_on_threads(registries, root.str(), 200);
  EXPECT_NE(errors[0].find("1 of 2 rank files were not written (rank_00001.h5)"), std::string::npos)
      << errors[0];
  EXPECT_NE(errors[1].find("strings with NUL bytes cannot be stored"), std::string::npos)
      << errors[1];
  std::set<std::string> names;
  for (const auto& item : fs::directory_iterator(root.str())) {
    names.insert(item.path().filename().string());
  }
  EXPECT_EQ(names, (std::set<std::string>{"latest", "step_000000100"}));
  EXPECT_EQ(find_latest(root.str()), root / "step_000000100");
}

TEST(MultiRankCheckpoint, StaleTmpDirectoryIsReplacedAndResaveReplacesTheStep) {
  ScratchDir root;
  TestState first(1), second(2);
  const int64_t total = total_elements(first.registry);
  fs::create_directories(root / ".step_000000100.tmp");
  std::ofstream(root / ".step_000000100.tmp/rank_00002.h5") << "left by a crash";
  save_as_ranks(first.registry, root.str(), 100, even_bounds(total, 3));
  EXPECT_FALSE(fs::exists(root / "step_000000100/rank_00002.h5.tmp"));
  // The same step again, by 2 ranks: the 3-rank copy is replaced as a whole.
  save_as_ranks(second.registry, root.str(), 100, even_bounds(total, 2));
  EXPECT_FALSE(fs::exists(root / "step_000000100/rank_00002.h5"));
  EXPECT_EQ(read_checkpoint_info(root / "step_000000100").world, 2);
  TestState loaded(3);
  load_as_ranks(loaded.registry, root / "step_000000100", 3, even_bounds(total, 3));
  expect_identical(second.registry, loaded.registry);
  std::set<std::string> names;
  for (const auto& item : fs::directory_iterator(root.str())) {
    names.insert(item.path().filename().string());
  }
  EXPECT_EQ(names, (std::set<std::string>{"latest", "step_000000100"}));
}

TEST(MultiRankCheckpoint, SingleRankLayoutIsUnchanged) {
  // World 1 writes whole tensors with their shapes and no slice attributes, as format version 1
  // always did.
  ScratchDir root;
  TestState saved(1);
  save_checkpoint(saved.registry, root.str(), 1);
  const std::string file = rank_file(root / "step_000000001", 0);
  const hid_t f = H5Fopen(file.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT);
  for (const StateEntry& e : saved.registry) {
    const hid_t d = H5Dopen2(f, e.name.c_str(), H5P_DEFAULT);
    EXPECT_EQ(H5Aexists(d, "offset"), 0) << e.name;
    EXPECT_EQ(H5Aexists(d, "full_shape"), 0) << e.name;
    H5Dclose(d);
  }
  H5Fclose(f);
}

}  // namespace
}  // namespace memento::checkpoint
