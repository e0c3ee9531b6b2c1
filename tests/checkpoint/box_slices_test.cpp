// Checkpoints of sharded parameters: each "rank" (a ParameterSet of this process) holds its
// tensor-parallel boxes, or ZeRO-1-style flat ranges, or everything; a checkpoint written in one
// layout loads in every other, bit for bit. Ranks save on threads synchronized by a
// std::barrier, as through a communicator's barrier.
#include <gtest/gtest.h>

#if __has_include(<hdf5.h>)
#include <hdf5.h>
#else
#include <hdf5/serial/hdf5.h>
#endif

#include <algorithm>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "checkpoint/checkpoint_dir.h"
#include "checkpoint/crc32c.h"
#include "checkpoint/hdf5_checkpoint.h"
#include "core/parameters.h"
#include "tests/checkpoint/checkpoint_test_util.h"

namespace memento::checkpoint {
namespace {

using test_util::error_of;
using test_util::flip_byte;
using test_util::save_on_threads;
using test_util::ScratchDir;

// How the ranks of a layout hold the parameters.
struct Layout {
  std::string name;
  enum class Kind { kWhole, kBoxes, kFlat } kind = Kind::kWhole;
  int world = 1;
  int dim = 0;  // kBoxes: the weights' sharded dimension (0: row blocks, 1: column blocks)
};

const std::vector<Layout>& layouts() {
  static const std::vector<Layout> all = {
      {"whole", Layout::Kind::kWhole, 1, 0}, {"columns2", Layout::Kind::kBoxes, 2, 1},
      {"rows4", Layout::Kind::kBoxes, 4, 0}, {"columns4", Layout::Kind::kBoxes, 4, 1},
      {"flat3", Layout::Kind::kFlat, 3, 0},
  };
  return all;
}

// One rank's parameters and what it registers: a (16, 12) weight and a (4, 8, 12) one sharded
// along layout.dim, a bias sharded along its only dimension, a norm every rank holds whole.
struct Rank {
  ParameterSet params;
  StateRegistry registry;
};

std::unique_ptr<Rank> make_rank(const Layout& layout, int rank, DType dtype, uint64_t seed) {
  auto r = std::make_unique<Rank>();
  const bool boxes = layout.kind == Layout::Kind::kBoxes;
  const auto shard = [&](int dim) {
    return boxes ? ShardSpec::blocks(dim, rank, layout.world) : ShardSpec::whole();
  };
  const ParamRef w = r->params.declare("w", {16, 12}, shard(layout.dim), ParamInit::normal(1.0f));
  const ParamRef w3 =
      r->params.declare("w3", {4, 8, 12}, shard(layout.dim + 1), ParamInit::normal(1.0f));
  const ParamRef b = r->params.declare("b", {12}, shard(0), ParamInit::normal(1.0f), false);
  const ParamRef norm = r->params.declare("norm", {12}, ParamInit::normal(1.0f), false);
  r->params.allocate(dtype);
  r->params.initialize(seed);
  if (layout.kind == Layout::Kind::kFlat) {
    // As ZeRO-1 shards a flat buffer: whole tensors and flat ranges of the ones the cuts go
    // through (empty ones for the tensors outside the rank's range, so that the rank knows them
    // all).
    const int64_t total = r->params.padded_numel();
    const FlatRange range{total * rank / layout.world, total * (rank + 1) / layout.world};
    for (const ParameterSet::Entry& e : r->params.entries()) {
      const int64_t begin = std::clamp(range.begin, e.offset, e.offset + e.shape.numel());
      const int64_t end = std::clamp(range.end, begin, e.offset + e.shape.numel());
      r->registry.add_tensor_slice("model/" + e.name,
                                   r->params.flat_values().flat_range(begin, Shape{end - begin}),
                                   e.shape, begin - e.offset);
    }
    return r;
  }
  for (const ParamRef ref : {w, w3, b, norm}) {
    const ParameterSet::Entry& e = r->params.entries()[ref.index];
    r->registry.add_tensor_box("model/" + e.name, r->params.value(ref), e.global_shape,
                               r->params.global_box(ref));
  }
  return r;
}

std::vector<std::unique_ptr<Rank>> make_ranks(const Layout& layout, DType dtype, uint64_t seed) {
  std::vector<std::unique_ptr<Rank>> ranks;
  for (int r = 0; r < layout.world; ++r) ranks.push_back(make_rank(layout, r, dtype, seed));
  return ranks;
}

std::string save(const std::vector<std::unique_ptr<Rank>>& ranks, const ScratchDir& root) {
  std::vector<StateRegistry> registries;
  for (const auto& r : ranks) registries.push_back(r->registry);
  for (const std::string& error : save_on_threads(registries, root.str(), 1)) {
    EXPECT_EQ(error, "");
  }
  return root / "step_000000001";
}

bool same_bits(const TensorView& a, const TensorView& b) {
  return a.bytes() == b.bytes() && std::memcmp(a.raw(), b.raw(), a.bytes()) == 0;
}

// True when every tensor the two ranks registered holds the same bytes.
bool same_registered(const Rank& a, const Rank& b) {
  if (a.registry.size() != b.registry.size()) return false;
  for (size_t i = 0; i < a.registry.size(); ++i) {
    if (!same_bits(a.registry.entries()[i].tensor, b.registry.entries()[i].tensor)) return false;
  }
  return true;
}

// Every layout's checkpoint loads into every other layout, bit for bit. Initialisation indexes
// the global tensor (ParameterSet's tests prove it), so a layout initialised with the saved seed
// is what loading must give; the loaders start from another seed.
TEST(BoxSliceCheckpoint, EveryLayoutLoadsEveryOtherBitForBit) {
  for (const DType dtype : {DType::kF32, DType::kBF16}) {
    for (const Layout& from : layouts()) {
      ScratchDir root;
      const auto saved = make_ranks(from, dtype, 11);
      const std::string dir = save(saved, root);
      for (const Layout& to : layouts()) {
        const auto loaded = make_ranks(to, dtype, 99);
        const auto expected = make_ranks(to, dtype, 11);
        ASSERT_FALSE(same_bits(loaded[0]->params.flat_values(), expected[0]->params.flat_values()));
        for (int r = 0; r < to.world; ++r) {
          load_checkpoint(loaded[r]->registry, dir, r);
          EXPECT_TRUE(same_registered(*loaded[r], *expected[r]))
              << dtype_name(dtype) << ": saved as " << from.name << ", loaded as " << to.name
              << " rank " << r;
        }
      }
    }
  }
}

// A box stored by one rank file: its dataset has the box's shape, full_shape and box_start say
// where it lies, and crc32c covers its own bytes, as docs/checkpoint-format.md says.
TEST(BoxSliceCheckpoint, BoxesAreStoredWithTheirShapeAndPlace) {
  ScratchDir root;
  const Layout columns2 = layouts()[1];
  const auto ranks = make_ranks(columns2, DType::kF32, 5);
  const std::string dir = save(ranks, root);
  const hid_t f = H5Fopen(join_path(dir, rank_file_name(1)).c_str(), H5F_ACC_RDONLY, H5P_DEFAULT);
  ASSERT_GE(f, 0);
  const hid_t d = H5Dopen2(f, "model/w", H5P_DEFAULT);
  ASSERT_GE(d, 0);
  const hid_t space = H5Dget_space(d);
  hsize_t dims[2] = {0, 0};
  ASSERT_EQ(H5Sget_simple_extent_ndims(space), 2);
  H5Sget_simple_extent_dims(space, dims, nullptr);
  EXPECT_EQ(dims[0], 16u);
  EXPECT_EQ(dims[1], 6u);
  const auto read_pair = [&](const char* name) {
    std::vector<int64_t> v(2, -1);
    const hid_t a = H5Aopen(d, name, H5P_DEFAULT);
    H5Aread(a, H5T_NATIVE_INT64, v.data());
    H5Aclose(a);
    return v;
  };
  EXPECT_EQ(read_pair("full_shape"), (std::vector<int64_t>{16, 12}));
  EXPECT_EQ(read_pair("box_start"), (std::vector<int64_t>{0, 6}));
  EXPECT_EQ(H5Aexists(d, "offset"), 0);
  std::vector<float> box(16 * 6);
  H5Dread(d, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, box.data());
  uint32_t crc = 0;
  const hid_t ca = H5Aopen(d, "crc32c", H5P_DEFAULT);
  H5Aread(ca, H5T_NATIVE_UINT32, &crc);
  H5Aclose(ca);
  EXPECT_EQ(crc, crc32c(box.data(), box.size() * sizeof(float)));
  const TensorView local = ranks[1]->params.value(ParamRef{0});
  EXPECT_EQ(std::memcmp(box.data(), local.raw(), local.bytes()), 0);
  // The norm, which every rank holds whole, is a plain dataset.
  const hid_t norm = H5Dopen2(f, "model/norm", H5P_DEFAULT);
  EXPECT_EQ(H5Aexists(norm, "box_start"), 0);
  EXPECT_EQ(H5Aexists(norm, "full_shape"), 0);
  H5Dclose(norm);
  H5Sclose(space);
  H5Dclose(d);
  H5Fclose(f);
}

// Rank 1 of a column-block layout did not save its block of w: every load that needs part of it
// names the tensor and the first missing box; one that needs none of it loads.
TEST(BoxSliceCheckpoint, AMissingBoxIsReportedWithTheTensorAndTheRegion) {
  ScratchDir root;
  const Layout columns2 = layouts()[1];
  const auto ranks = make_ranks(columns2, DType::kF32, 5);
  std::vector<StateRegistry> registries;
  for (int r = 0; r < 2; ++r) {
    StateRegistry registry;
    for (const StateEntry& e : ranks[r]->registry) {
      if (r == 1 && e.name == "model/w") continue;
      if (e.is_box) {
        registry.add_tensor_box(e.name, e.tensor, e.full_shape, {e.box_start, e.tensor.shape()});
      } else {
        registry.add_tensor(e.name, e.tensor);
      }
    }
    registries.push_back(std::move(registry));
  }
  for (const std::string& error : save_on_threads(registries, root.str(), 1)) {
    EXPECT_EQ(error, "");
  }
  const std::string dir = root / "step_000000001";
  const std::string missing = dir + ": tensor model/w: elements ";
  const auto whole = make_ranks(layouts()[0], DType::kF32, 1);
  EXPECT_EQ(error_of([&] { load_checkpoint(whole[0]->registry, dir); }),
            missing + "[0:16, 6:12] of the saved tensor (shape [16, 12]) are in no rank file");
  const auto rows4 = make_ranks(layouts()[2], DType::kF32, 1);
  EXPECT_EQ(error_of([&] { load_checkpoint(rows4[3]->registry, dir, 3); }),
            missing + "[12:16, 6:12] of the saved tensor (shape [16, 12]) are in no rank file");
  // Elements [17, 100) of w: the end of row 1, rows 2..7, the start of row 8.
  Tensor range = Tensor::zeros({83}, DType::kF32);
  StateRegistry flat;
  flat.add_tensor_slice("model/w", range, {16, 12}, 17);
  EXPECT_EQ(error_of([&] { load_checkpoint(flat, dir, 0, {.allow_unregistered = true}); }),
            missing + "[1:2, 6:12] of the saved tensor (shape [16, 12]) are in no rank file");
  const auto columns4 = make_ranks(layouts()[3], DType::kF32, 1);
  const auto expected = make_ranks(layouts()[3], DType::kF32, 5);
  load_checkpoint(columns4[1]->registry, dir, 1);  // columns 3..5: all in rank 0's file
  EXPECT_TRUE(same_registered(*columns4[1], *expected[1]));
}

// A flipped bit in one stored box is caught whether the loader needs all of the box (checksummed
// from where it landed) or part of it (checksummed by reading it once more).
TEST(BoxSliceCheckpoint, ACorruptedBoxIsReportedByEveryReadPath) {
  ScratchDir root;
  const auto ranks = make_ranks(layouts()[1], DType::kF32, 5);
  const std::string dir = save(ranks, root);
  const std::string file = join_path(dir, rank_file_name(1));
  flip_byte(file, detail::tensor_file_offset(file, "model/w") + 37);
  const std::string corrupted = file + ": tensor model/w: checksum mismatch";
  const auto whole = make_ranks(layouts()[0], DType::kF32, 1);
  EXPECT_NE(error_of([&] { load_checkpoint(whole[0]->registry, dir); }).find(corrupted),
            std::string::npos);
  const auto rows4 = make_ranks(layouts()[2], DType::kF32, 1);
  EXPECT_NE(error_of([&] { load_checkpoint(rows4[0]->registry, dir, 0); }).find(corrupted),
            std::string::npos);
  const auto columns2 = make_ranks(layouts()[1], DType::kF32, 1);
  EXPECT_NE(error_of([&] { load_checkpoint(columns2[1]->registry, dir, 1); }).find(corrupted),
            std::string::npos);
  load_checkpoint(columns2[0]->registry, dir, 0);  // rank 0's own file is intact
}

// The checkpoint the trainer wrote before boxes existed (tests/golden/README.md) loads through
// today's reader as a whole tensor, as boxes and as flat ranges, all agreeing bit for bit.
TEST(BoxSliceCheckpoint, APreSeamsCheckpointLoadsAsWholeBoxesAndRanges) {
  const std::string dir =
      std::string(MEMENTO_SOURCE_DIR) + "/tests/data/pre_seams_checkpoint/step_000000010";
  const std::string name = "model/model.embed_tokens.weight";
  const Shape full{256, 32};
  const LoadOptions others{.allow_unregistered = true};
  Tensor whole = Tensor::zeros(full, DType::kF32);
  StateRegistry registry;
  registry.add_tensor(name, whole);
  load_checkpoint(registry, dir, 0, others);
  const float* w = whole.data<float>();
  int nonzero = 0;
  for (int64_t i = 0; i < full.numel(); ++i) nonzero += w[i] != 0.0f;
  EXPECT_GT(nonzero, full.numel() / 2);
  for (int64_t c = 0; c < 4; ++c) {  // column blocks of 8
    Tensor block = Tensor::zeros({256, 8}, DType::kF32);
    StateRegistry boxes;
    boxes.add_tensor_box(name, block, full, {{0, 8 * c}, {256, 8}});
    load_checkpoint(boxes, dir, 0, others);
    for (int64_t row = 0; row < 256; ++row) {
      ASSERT_EQ(std::memcmp(block.data<float>() + row * 8, w + row * 32 + 8 * c, 8 * sizeof(float)),
                0)
          << "block " << c << " row " << row;
    }
  }
  Tensor range = Tensor::zeros({1000}, DType::kF32);
  StateRegistry flat;
  flat.add_tensor_slice(name, range, full, 4321);
  load_checkpoint(flat, dir, 0, others);
  EXPECT_EQ(std::memcmp(range.data<float>(), w + 4321, 1000 * sizeof(float)), 0);
}

}  // namespace
}  // namespace memento::checkpoint
