#include "checkpoint/hdf5_checkpoint.h"

#include <gtest/gtest.h>

// The tests read the files with the plain HDF5 C API, as another tool would.
#if __has_include(<hdf5.h>)
#include <hdf5.h>
#else
#include <hdf5/serial/hdf5.h>
#endif

#include <fstream>
#include <set>

#include "checkpoint/checkpoint_dir.h"
#include "checkpoint/crc32c.h"
#include "checkpoint/format_version.h"
#include "tests/checkpoint/checkpoint_test_util.h"

namespace memento::checkpoint {
namespace {

using test_util::error_of;
using test_util::expect_identical;
using test_util::flip_byte;
using test_util::ScratchDir;
using test_util::TensorSpec;
using test_util::TestState;
namespace fs = std::filesystem;

std::string rank0(const std::string& dir) { return dir + "/rank_00000.h5"; }

uint64_t dataset_offset(const std::string& file, const std::string& name) {
  const hid_t f = H5Fopen(file.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT);
  const hid_t d = H5Dopen2(f, name.c_str(), H5P_DEFAULT);
  const haddr_t offset = H5Dget_offset(d);
  H5Dclose(d);
  H5Fclose(f);
  EXPECT_NE(offset, HADDR_UNDEF);
  return offset;
}

TEST(Hdf5Checkpoint, RoundTripIsBitIdenticalForEveryDTypeScalarAndString) {
  ScratchDir root;
  TestState saved(1);
  save_checkpoint(saved.registry, root.str(), 100);
  const std::string dir = root / "step_000000100";
  ASSERT_TRUE(fs::is_regular_file(rank0(dir)));

  TestState loaded(2);  // different values everywhere
  load_checkpoint(loaded.registry, dir);
  expect_identical(saved.registry, loaded.registry);
  EXPECT_TRUE(std::isnan(loaded.nan_payload));

  const CheckpointInfo info = read_checkpoint_info(dir);
  EXPECT_EQ(info.format_version, kFormatVersion);
  EXPECT_EQ(info.step, 100);
  EXPECT_EQ(info.rank, 0);
  EXPECT_EQ(info.world, 1);
  EXPECT_EQ(info.memento_version, kMementoVersion);
  EXPECT_EQ(info.created_utc.size(), std::string("2025-01-31T12:00:00Z").size());
  EXPECT_EQ(read_string(dir, "meta/config"), saved.config);
}

// What docs/checkpoint-format.md promises a reader such as h5py.
TEST(Hdf5Checkpoint, FileLayoutIsReadableWithPlainHdf5) {
  ScratchDir root;
  TestState saved(3);
  save_checkpoint(saved.registry, root.str(), 42);
  const hid_t f = H5Fopen(rank0(root / "step_000000042").c_str(), H5F_ACC_RDONLY, H5P_DEFAULT);
  ASSERT_GE(f, 0);
  auto root_i64 = [&](const char* name) {
    int64_t v = -1;
    const hid_t a = H5Aopen(f, name, H5P_DEFAULT);
    H5Aread(a, H5T_NATIVE_INT64, &v);
    H5Aclose(a);
    return v;
  };
  EXPECT_EQ(root_i64("format_version"), kFormatVersion);
  EXPECT_EQ(root_i64("step"), 42);
  EXPECT_EQ(root_i64("rank"), 0);
  EXPECT_EQ(root_i64("world"), 1);
  for (const char* attr : {"format", "created_utc", "memento_version"}) {
    EXPECT_GT(H5Aexists(f, attr), 0) << attr;
  }

  const std::vector<std::pair<DType, hid_t>> expected_types = {
      {DType::kF32, H5T_IEEE_F32LE}, {DType::kF64, H5T_IEEE_F64LE},
      {DType::kI32, H5T_STD_I32LE},  {DType::kI64, H5T_STD_I64LE},
      {DType::kU16, H5T_STD_U16LE},  {DType::kBF16, H5T_STD_U16LE},
      {DType::kF16, H5T_STD_U16LE},  {DType::kF8E4M3, H5T_STD_U8LE},
      {DType::kF8E5M2, H5T_STD_U8LE}};
  for (const StateEntry& e : saved.registry) {
    const hid_t d = H5Dopen2(f, e.name.c_str(), H5P_DEFAULT);  // path == registry name
    ASSERT_GE(d, 0) << e.name;
    const hid_t type = H5Dget_type(d);
    const hid_t space = H5Dget_space(d);
    uint32_t stored_crc = 0;
    const hid_t crc_attr = H5Aopen(d, "crc32c", H5P_DEFAULT);
    H5Aread(crc_attr, H5T_NATIVE_UINT32, &stored_crc);
    H5Aclose(crc_attr);
    if (e.kind == EntryKind::kTensor) {
      for (const auto& [dtype, h5type] : expected_types) {
        if (dtype == e.tensor.dtype()) {
          EXPECT_GT(H5Tequal(type, h5type), 0) << e.name;
        }
      }
      ASSERT_EQ(H5Sget_simple_extent_ndims(space), e.tensor.ndim()) << e.name;
      std::vector<hsize_t> dims(e.tensor.ndim());
      H5Sget_simple_extent_dims(space, dims.data(), nullptr);
      for (int i = 0; i < e.tensor.ndim(); ++i) EXPECT_EQ(dims[i], hsize_t(e.tensor.size(i)));
      // "dtype" names the real dtype; the data are the raw bytes; the checksum is theirs.
      const hid_t dtype_attr = H5Aopen(d, "dtype", H5P_DEFAULT);
      const hid_t str = H5Tcopy(H5T_C_S1);
      H5Tset_size(str, H5T_VARIABLE);
      H5Tset_cset(str, H5T_CSET_UTF8);
      char* dtype = nullptr;
      ASSERT_GE(H5Aread(dtype_attr, str, &dtype), 0) << e.name;
      ASSERT_NE(dtype, nullptr);
      EXPECT_EQ(std::string(dtype), dtype_name(e.tensor.dtype()));
      H5free_memory(dtype);
      H5Tclose(str);
      H5Aclose(dtype_attr);
      std::vector<unsigned char> bytes(e.tensor.bytes());
      if (!bytes.empty()) {
        H5Dread(d, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, bytes.data());
        EXPECT_EQ(std::memcmp(bytes.data(), e.tensor.raw(), bytes.size()), 0) << e.name;
      }
      EXPECT_EQ(stored_crc, crc32c(bytes.data(), bytes.size())) << e.name;
    } else {
      EXPECT_EQ(H5Sget_simple_extent_type(space), H5S_SCALAR) << e.name;
      if (e.kind == EntryKind::kInt) {
        EXPECT_GT(H5Tequal(type, H5T_STD_I64LE), 0);
        EXPECT_EQ(stored_crc, crc32c(e.int_value, 8));
      }
      if (e.kind == EntryKind::kDouble) {
        EXPECT_GT(H5Tequal(type, H5T_IEEE_F64LE), 0);
        EXPECT_EQ(stored_crc, crc32c(e.double_value, 8));
      }
      if (e.kind == EntryKind::kString) {
        EXPECT_GT(H5Tis_variable_str(type), 0);
        EXPECT_EQ(H5Tget_cset(type), H5T_CSET_UTF8);
        EXPECT_EQ(stored_crc, crc32c(e.string_value->data(), e.string_value->size()));
      }
    }
    H5Sclose(space);
    H5Tclose(type);
    H5Dclose(d);
  }
  H5Fclose(f);
}

TEST(Hdf5Checkpoint, CorruptedTensorByteIsReportedWithTensorAndChecksums) {
  ScratchDir root;
  TestState saved(1);
  save_checkpoint(saved.registry, root.str(), 100);
  const std::string dir = root / "step_000000100";
  flip_byte(rank0(dir), dataset_offset(rank0(dir), "model/model.norm.weight") + 5);

  TestState loaded(2);
  const std::string message = error_of([&] { load_checkpoint(loaded.registry, dir); });
  EXPECT_NE(message.find(rank0(dir) + ": tensor model/model.norm.weight: checksum mismatch "
                                      "(stored 0x"),
            std::string::npos)
      << message;
  EXPECT_NE(message.find(", computed 0x"), std::string::npos) << message;
  EXPECT_NE(message.find("the checkpoint is corrupted"), std::string::npos) << message;
  // Scalars and strings are assigned only after every check passed.
  EXPECT_EQ(loaded.step, TestState(2).step);
  EXPECT_EQ(loaded.config, TestState(2).config);
}

TEST(Hdf5Checkpoint, CorruptedStringIsReported) {
  ScratchDir root;
  TestState saved(1);
  save_checkpoint(saved.registry, root.str(), 100);
  const std::string dir = root / "step_000000100";
  // The 200 kB string lives in the global heap; find its bytes by content.
  std::ifstream in(rank0(dir), std::ios::binary);
  const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const size_t at = bytes.find(std::string(1000, 'x'));
  ASSERT_NE(at, std::string::npos);
  flip_byte(rank0(dir), at + 10);
  EXPECT_NE(
      error_of([&] { read_string(dir, "meta/big"); }).find("string meta/big: checksum mismatch"),
      std::string::npos);
}

TEST(Hdf5Checkpoint, TruncatedFileIsReportedByName) {
  ScratchDir root;
  TestState saved(1);
  save_checkpoint(saved.registry, root.str(), 100);
  const std::string dir = root / "step_000000100";
  const uintmax_t size = fs::file_size(rank0(dir));
  for (uintmax_t cut : {size - 1, size / 2, uintmax_t{100}, uintmax_t{0}}) {
    fs::resize_file(rank0(dir), cut);
    TestState loaded(2);
    const std::string message = error_of([&] { load_checkpoint(loaded.registry, dir); });
    EXPECT_EQ(message.rfind(rank0(dir) + ": ", 0), 0u) << message;
    EXPECT_FALSE(is_complete_checkpoint(dir)) << cut;
  }
  EXPECT_EQ(find_latest(root.str()), std::nullopt);
  fs::remove(rank0(dir));
  EXPECT_NE(error_of([&] { load_checkpoint(saved.registry, dir); }).find("no such checkpoint file"),
            std::string::npos);
}

TEST(Hdf5Checkpoint, ShapeDTypeKindAndMissingMismatchesNameTheEntry) {
  ScratchDir root;
  const std::vector<TensorSpec> specs = {{"model/w", {4, 8}, DType::kF32},
                                         {"model/b", {8}, DType::kBF16}};
  TestState saved(1, specs);
  save_checkpoint(saved.registry, root.str(), 1);
  const std::string dir = root / "step_000000001";
  const std::string file = rank0(dir);

  TestState transposed(2, {{"model/w", {8, 4}, DType::kF32}, specs[1]});
  EXPECT_EQ(error_of([&] { load_checkpoint(transposed.registry, dir); }),
            file + ": tensor model/w: expected shape [8, 4], found [4, 8]");

  TestState rank_changed(2, {{"model/w", {32}, DType::kF32}, specs[1]});
  EXPECT_EQ(error_of([&] { load_checkpoint(rank_changed.registry, dir); }),
            file + ": tensor model/w: expected shape [32], found [4, 8]");

  TestState retyped(2, {specs[0], {"model/b", {8}, DType::kF16}});
  EXPECT_EQ(error_of([&] { load_checkpoint(retyped.registry, dir); }),
            file + ": tensor model/b: expected dtype f16, found bf16");

  TestState missing(2, {specs[0], specs[1], {"model/lm_head.weight", {2, 3}, DType::kF32}});
  EXPECT_EQ(error_of([&] { load_checkpoint(missing.registry, dir); }),
            file +
                ": 1 registered entries are missing from the checkpoint: "
                "model/lm_head.weight (f32 [2, 3])");

  // The step stored as a double is not an int.
  StateRegistry kinds;
  Tensor w = Tensor::empty({4, 8}, DType::kF32), b = Tensor::empty({8}, DType::kBF16);
  kinds.add_tensor("model/w", w);
  kinds.add_tensor("model/b", b);
  double step_as_double = 0;
  kinds.add_double("state/step", &step_as_double);
  kinds.add_int("state/min_int", &saved.min_int);
  const std::string message =
      error_of([&] { load_checkpoint(kinds, dir, 0, LoadOptions{.allow_unregistered = true}); });
  EXPECT_EQ(message, file + ": double state/step: expected a scalar double, found int64 []");
}

TEST(Hdf5Checkpoint, UnregisteredEntriesAreRefusedUnlessAllowed) {
  ScratchDir root;
  TestState saved(1);
  save_checkpoint(saved.registry, root.str(), 7);
  const std::string dir = root / "step_000000007";

  TestState smaller(2, {{"model/model.norm.weight", {16}, DType::kF32}});
  const std::string message = error_of([&] { load_checkpoint(smaller.registry, dir); });
  EXPECT_NE(message.find(rank0(dir) + ": the checkpoint holds 12 entries that are not registered "
                                      "(a checkpoint of another model?): "),
            std::string::npos)
      << message;
  EXPECT_NE(message.find(", ..."), std::string::npos) << message;  // only the first few

  load_checkpoint(smaller.registry, dir, 0, LoadOptions{.allow_unregistered = true});
  EXPECT_EQ(std::memcmp(smaller.tensors[0].view().raw(), saved.tensors[2].view().raw(), 64), 0);
  EXPECT_EQ(smaller.step, saved.step);
}

TEST(Hdf5Checkpoint, OtherFormatVersionIsRefusedButStillFound) {
  ScratchDir root;
  TestState saved(1);
  save_checkpoint(saved.registry, root.str(), 5);
  const std::string dir = root / "step_000000005";
  {
    const hid_t f = H5Fopen(rank0(dir).c_str(), H5F_ACC_RDWR, H5P_DEFAULT);
    const hid_t a = H5Aopen(f, "format_version", H5P_DEFAULT);
    const int64_t future = kFormatVersion + 1;
    H5Awrite(a, H5T_NATIVE_INT64, &future);
    H5Aclose(a);
    H5Fclose(f);
  }
  TestState loaded(2);
  EXPECT_EQ(error_of([&] { load_checkpoint(loaded.registry, dir); }),
            rank0(dir) + ": format version " + std::to_string(kFormatVersion + 1) +
                ", this build reads version " + std::to_string(kFormatVersion));
  EXPECT_NE(error_of([&] { read_string(dir, "meta/config"); }).find("format version"),
            std::string::npos);
  // Resuming must refuse it loudly, not skip to an older checkpoint or to scratch.
  EXPECT_EQ(find_latest(root.str()), dir);
  EXPECT_EQ(read_checkpoint_info(dir).format_version, kFormatVersion + 1);
}

TEST(Hdf5Checkpoint, ReadStringNamesWhatIsMissingOrWrong) {
  ScratchDir root;
  TestState saved(1);
  save_checkpoint(saved.registry, root.str(), 3);
  const std::string dir = root / "step_000000003";
  EXPECT_EQ(read_string(dir, "meta/empty"), saved.empty_string);
  EXPECT_EQ(read_string(dir, "meta/big"), saved.big_string);
  EXPECT_EQ(error_of([&] { read_string(dir, "meta/nope"); }),
            rank0(dir) + ": no string entry meta/nope");
  EXPECT_EQ(error_of([&] { read_string(dir, "nope"); }), rank0(dir) + ": no string entry nope");
  EXPECT_EQ(error_of([&] { read_string(dir, "model/model.norm.weight"); }),
            rank0(dir) +
                ": string model/model.norm.weight: expected a scalar string, found "
                "float32 [16]");
}

TEST(Hdf5Checkpoint, ResaveOfTheSameStepReplacesIt) {
  ScratchDir root;
  TestState first(1), second(2);
  save_checkpoint(first.registry, root.str(), 100);
  save_checkpoint(second.registry, root.str(), 100);
  TestState loaded(3);
  load_checkpoint(loaded.registry, root / "step_000000100");
  expect_identical(second.registry, loaded.registry);
  std::set<std::string> names;
  for (const auto& item : fs::directory_iterator(root.str())) {
    names.insert(item.path().filename().string());
  }
  EXPECT_EQ(names, (std::set<std::string>{"latest", "step_000000100"}));  // no leftovers
}

TEST(Hdf5Checkpoint, UnwritableRootIsReported) {
  ScratchDir root;
  std::ofstream(root / "file") << "not a directory";
  TestState state(1);
  EXPECT_NE(error_of([&] {
              save_checkpoint(state.registry, root / "file", 1);
            }).find("cannot create checkpoint root " + (root / "file")),
            std::string::npos);
  EXPECT_EQ(error_of([&] { save_checkpoint(state.registry, root.str(), 1, 3); }),
            root.str() + ": rank 3 of 1 ranks cannot save");

  // A save that fails midway leaves neither a step directory nor its tmp directory.
  state.config = std::string("a\0b", 3);
  EXPECT_NE(error_of([&] {
              save_checkpoint(state.registry, root / "ckpt", 1);
            }).find(": string meta/config: strings with NUL bytes cannot be stored"),
            std::string::npos);
  EXPECT_TRUE(fs::is_empty(root / "ckpt"));
}

// ---------------------------------------------------------------------------------------------
// find_latest and prune_checkpoints

class CheckpointRoot : public ::testing::Test {
 protected:
  void save(int64_t step) { save_checkpoint(state_.registry, root_.str(), step); }
  std::string dir(int64_t step) const { return root_ / step_dir_name(step); }
  void write_latest(const std::string& text) const { std::ofstream(root_ / "latest") << text; }
  std::set<std::string> step_dirs() const {
    std::set<std::string> names;
    for (const auto& item : fs::directory_iterator(root_.str())) {
      if (item.path().filename().string().starts_with("step_")) {
        names.insert(item.path().filename().string());
      }
    }
    return names;
  }

  ScratchDir root_;
  TestState state_{1, {{"model/w", {64}, DType::kF32}}};
};

TEST_F(CheckpointRoot, NothingToFindInAnEmptyOrMissingRoot) {
  EXPECT_EQ(find_latest(root_.str()), std::nullopt);
  EXPECT_EQ(find_latest(root_ / "does_not_exist"), std::nullopt);
  prune_checkpoints(root_.str(), 1);  // nothing to do, no error
}

TEST_F(CheckpointRoot, LatestPointerWinsWhenComplete) {
  save(100);
  save(200);
  save(300);
  EXPECT_EQ(find_latest(root_.str()), dir(300));
  EXPECT_EQ(read_latest_pointer(root_.str()), "step_000000300");
  write_latest("step_000000200\n");  // e.g. a deliberate rollback
  EXPECT_EQ(find_latest(root_.str()), dir(200));
}

TEST_F(CheckpointRoot, CorruptOrMissingLatestFallsBackToNewestCompleteDirectory) {
  save(100);
  save(200);
  save(30);  // latest names 30, but 200 is the newest
  for (const std::string text :
       {"garbage", "", "step_000000400\n", "../step_000000100", "step_12x", "/etc/passwd"}) {
    write_latest(text);
    EXPECT_EQ(find_latest(root_.str()), dir(200)) << text;
  }
  fs::remove(root_ / "latest");
  EXPECT_EQ(find_latest(root_.str()), dir(200));
  // latest naming an incomplete directory is not trusted either.
  fs::resize_file(dir(200) + "/rank_00000.h5", 64);
  write_latest("step_000000200");
  EXPECT_EQ(find_latest(root_.str()), dir(100));
}

TEST_F(CheckpointRoot, TemporaryAndIncompleteDirectoriesAreIgnored) {
  save(100);
  fs::remove(root_ / "latest");
  // A complete-looking file inside a tmp directory, a step directory with a half-copied file,
  // an empty step directory and one with a misleading name.
  const std::string rank_file = dir(100) + "/rank_00000.h5";
  fs::create_directories(root_ / ".step_000000900.tmp.12345");
  fs::copy_file(rank_file, root_ / ".step_000000900.tmp.12345/rank_00000.h5");
  fs::create_directories(dir(800));
  fs::copy_file(rank_file, dir(800) + "/rank_00000.h5");
  fs::resize_file(dir(800) + "/rank_00000.h5", fs::file_size(rank_file) / 2);
  fs::create_directories(dir(700));
  fs::create_directories(dir(600));
  fs::copy_file(rank_file, dir(600) + "/rank_00000.h5");  // says step 100 inside
  fs::create_directories(root_ / "step_000000500.incomplete");
  fs::copy_file(rank_file, root_ / "step_000000500.incomplete/rank_00000.h5");
  EXPECT_EQ(find_latest(root_.str()), dir(100));
  EXPECT_FALSE(is_complete_checkpoint(dir(800)));
  EXPECT_FALSE(is_complete_checkpoint(dir(700)));
  EXPECT_FALSE(is_complete_checkpoint(dir(600)));
  EXPECT_TRUE(is_complete_checkpoint(dir(100)));
  EXPECT_TRUE(is_complete_checkpoint(dir(100) + "/"));
}

TEST_F(CheckpointRoot, StepsSortNumericallyPastNineDigits) {
  save(999999999);
  save(1000000000);
  fs::remove(root_ / "latest");
  EXPECT_EQ(step_dir_name(1000000000), "step_1000000000");
  EXPECT_EQ(find_latest(root_.str()), dir(1000000000));
}

TEST_F(CheckpointRoot, PruneKeepsTheNewestAndTheOneLatestNames) {
  for (int64_t step : {1, 2, 3, 4, 5}) save(step);
  fs::create_directories(root_ / ".step_000000009.tmp.1");
  fs::create_directories(dir(9));  // incomplete: left alone
  prune_checkpoints(root_.str(), 2);
  EXPECT_EQ(step_dirs(),
            (std::set<std::string>{"step_000000004", "step_000000005", "step_000000009"}));
  EXPECT_TRUE(fs::exists(root_ / ".step_000000009.tmp.1"));

  save(6);
  save(7);
  write_latest("step_000000004");
  prune_checkpoints(root_.str(), 1);
  EXPECT_EQ(step_dirs(),
            (std::set<std::string>{"step_000000004", "step_000000007", "step_000000009"}));
  EXPECT_EQ(find_latest(root_.str()), dir(4));
  // No hidden ".deleting" directories remain.
  for (const auto& item : fs::directory_iterator(root_.str())) {
    EXPECT_EQ(item.path().filename().string().find(".deleting"), std::string::npos);
  }
  EXPECT_NE(error_of([&] { prune_checkpoints(root_.str(), 0); }).find("keep at least 1"),
            std::string::npos);
}

TEST(CheckpointDir, NamesParseAndJoin) {
  EXPECT_EQ(step_dir_name(100), "step_000000100");
  EXPECT_EQ(rank_file_name(3), "rank_00003.h5");
  EXPECT_EQ(parse_step_dir_name("step_000000100"), 100);
  EXPECT_EQ(parse_step_dir_name("step_"), std::nullopt);
  EXPECT_EQ(parse_step_dir_name(".step_000000100.tmp.5"), std::nullopt);
  EXPECT_EQ(parse_step_dir_name("step_000000100.tmp"), std::nullopt);
  EXPECT_EQ(parse_step_dir_name("step_-1"), std::nullopt);
  EXPECT_EQ(join_path("a/", "b"), "a/b");
  EXPECT_EQ(join_path("a", "b"), "a/b");
}

}  // namespace
}  // namespace memento::checkpoint
