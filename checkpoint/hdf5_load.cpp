// Loading: each registered tensor region (whole, flat range or box) is assembled from the slices
// of any kind that any number of ranks saved (resharding), straight into its buffer; the rank
// file of the same rank alone serves when the registered slices are exactly the saved ones
// (resuming with the world and layout that saved).
#include <algorithm>
#include <cstdio>
#include <string>
#include <unordered_set>
#include <utility>
#include <vector>

#include "checkpoint/checkpoint_dir.h"
#include "checkpoint/crc32c.h"
#include "checkpoint/hdf5_checkpoint.h"
#include "checkpoint/hdf5_format.h"
#include "checkpoint/hdf5_slices.h"
#include "checkpoint/slice_plan.h"

namespace memento::checkpoint {
namespace {

constexpr size_t kMaxListedNames = 5;  // names quoted in one error message

std::string list_names(const std::vector<std::string>& names) {
  std::string s;
  for (size_t i = 0; i < std::min(names.size(), kMaxListedNames); ++i) {
    s += (i ? ", " : "") + names[i];
  }
  if (names.size() > kMaxListedNames) s += ", ...";
  return s;
}

void verify_checksum(uint32_t stored, uint32_t computed, const std::string& where) {
  char text[64];
  std::snprintf(text, sizeof(text), "(stored 0x%08x, computed 0x%08x)", stored, computed);
  MEMENTO_EXPECT(computed == stored, CheckpointError, where, ": checksum mismatch ", text,
                 ": the checkpoint is corrupted");
}

// Whether `name` ("a/b/c") names a dataset in the file. Walks the path because H5Lexists fails
// instead of answering false when a parent group is missing.
bool dataset_exists(hid_t file, const std::string& name, const std::string& where) {
  for (size_t slash = name.find('/');; slash = name.find('/', slash + 1)) {
    const std::string prefix = name.substr(0, slash);
    if (HDF5_CHECK(H5Lexists(file, prefix.c_str(), H5P_DEFAULT), where) <= 0) return false;
    if (slash == std::string::npos) break;
  }
  H5Object object(HDF5_CHECK(H5Oopen(file, name.c_str(), H5P_DEFAULT), where));
  return H5Iget_type(object.get()) == H5I_DATASET;
}

herr_t collect_dataset(hid_t group, const char* name, const H5L_info_t* info, void* data) {
  if (info->type != H5L_TYPE_HARD) return 0;
  const hid_t object = H5Oopen(group, name, H5P_DEFAULT);
  if (object < 0) return -1;
  if (H5Iget_type(object) == H5I_DATASET)
    static_cast<std::vector<std::string>*>(data)->push_back(name);
  H5Oclose(object);
  return 0;
}

std::vector<std::string> list_datasets(hid_t file, const std::string& path) {
  std::vector<std::string> names;
  HDF5_CHECK(H5Lvisit(file, H5_INDEX_NAME, H5_ITER_INC, collect_dataset, &names), path,
             ": listing datasets");
  return names;
}

// One rank file of the checkpoint being loaded.
struct RankFile {
  std::string path;
  H5File file;
  int64_t step = 0;
  int64_t world = 0;
  std::vector<std::string> datasets;  // in name order
  std::unordered_set<std::string> dataset_set;
};

// Rank file `rank` of `dir`, of this build's format version and holding that rank.
RankFile open_member(const std::string& dir, int rank) {
  RankFile f;
  f.path = join_path(dir, rank_file_name(rank));
  f.file = h5::open_rank_file(f.path);
  const std::string where = f.path + ": root";
  const int64_t stored_rank = h5::read_attr_i64(f.file.get(), "rank", where);
  MEMENTO_EXPECT(stored_rank == rank, CheckpointError, f.path, ": holds rank ", stored_rank,
                 ", expected rank ", rank);
  f.step = h5::read_attr_i64(f.file.get(), "step", where);
  f.world = h5::read_attr_i64(f.file.get(), "world", where);
  f.datasets = list_datasets(f.file.get(), f.path);
  f.dataset_set.insert(f.datasets.begin(), f.datasets.end());
  return f;
}

// What one rank file stores of one tensor.
struct StoredSlice {
  size_t file = 0;      // index into the opened RankFiles
  TensorRegion region;  // which part of the logical tensor, laid out as the dataset is
  uint32_t checksum = 0;
};

// The part of the tensor of shape `full` that a dataset of dimensions `dims` stores, from its
// slice attributes: a flat range (offset), a box (box_start) or, with neither, all of it. Throws
// CheckpointError unless the part lies inside the tensor.
TensorRegion stored_region(hid_t d, const std::vector<int64_t>& dims, const Shape& full,
                           const std::string& where) {
  const auto malformed = [&](const std::string& what) {
    return CheckpointError(::memento::detail::concat(where, ": malformed slice: dataset ",
                                                     h5::dims_str(dims), " ", what,
                                                     " of full shape ", full.str()));
  };
  if (h5::has_attr(d, h5::kOffsetAttr, where)) {
    const int64_t offset = h5::read_attr_i64(d, h5::kOffsetAttr, where);
    if (dims.size() != 1 || offset < 0 || offset + dims[0] > full.numel()) {
      throw malformed(::memento::detail::concat("at offset ", offset));
    }
    return TensorRegion::flat(full, {offset, offset + dims[0]});
  }
  if (h5::has_attr(d, h5::kBoxStartAttr, where)) {
    const std::vector<int64_t> start = h5::read_attr_i64_array(d, h5::kBoxStartAttr, where);
    const auto at = ::memento::detail::concat("at box start ", h5::dims_str(start));
    if (static_cast<int>(dims.size()) != full.ndim() || start.size() != dims.size()) {
      throw malformed(at);
    }
    TensorBox box = TensorBox::whole(full);
    for (int i = 0; i < full.ndim(); ++i) {
      box.start = box.start.with_dim(i, start[i]);
      box.count = box.count.with_dim(i, dims[i]);
    }
    if (!box.inside(full)) throw malformed(at);
    return TensorRegion::of_box(full, box);
  }
  return TensorRegion::whole(full);
}

// The slice of `entry`'s tensor that `file` stores, checked against the registered dtype and full
// shape.
StoredSlice inspect_slice(const RankFile& file, size_t index, const StateEntry& entry) {
  const std::string where = h5::entry_where(file.path, entry);
  h5::expect_host_tensor(entry, file.path);
  const H5Dataset dataset(
      HDF5_CHECK(H5Dopen2(file.file.get(), entry.name.c_str(), H5P_DEFAULT), where));
  const hid_t d = dataset.get();
  MEMENTO_EXPECT(h5::has_attr(d, h5::kDTypeAttr, where), CheckpointError, where,
                 ": not a tensor (no dtype attribute)");
  const std::string stored_dtype = h5::read_attr_string(d, h5::kDTypeAttr, where);
  const DType dtype = entry.tensor.dtype();
  MEMENTO_EXPECT(stored_dtype == dtype_name(dtype), CheckpointError, where, ": expected dtype ",
                 dtype_name(dtype), ", found ", stored_dtype);
  const H5Type file_type(HDF5_CHECK(H5Dget_type(d), where));
  const hid_t type = h5::storage_type(dtype);
  MEMENTO_EXPECT(HDF5_CHECK(H5Tequal(file_type.get(), type), where) > 0, CheckpointError, where,
                 ": dtype ", stored_dtype, " stored as ", h5::describe_type(file_type.get()),
                 ", expected ", h5::describe_type(type));

  const std::vector<int64_t> dims = h5::dataset_dims(d, where);
  const bool slice =
      h5::has_attr(d, h5::kOffsetAttr, where) || h5::has_attr(d, h5::kBoxStartAttr, where);
  const std::vector<int64_t> full =
      slice ? h5::read_attr_i64_array(d, h5::kFullShapeAttr, where) : dims;
  MEMENTO_EXPECT(full == h5::dims_of(entry.full_shape), CheckpointError, where, ": expected shape ",
                 entry.full_shape.str(), ", found ", h5::dims_str(full));
  return {index, stored_region(d, dims, entry.full_shape, where),
          h5::read_attr_u32(d, h5::kChecksumAttr, where)};
}

// True, with `stored` filled in, when `file` stores exactly the registered slice of every
// registered tensor, so that it alone restores them; false otherwise, whatever the reason.
bool holds_exactly(const RankFile& file, size_t index, const StateRegistry& registry,
                   std::vector<std::vector<StoredSlice>>& stored) {
  std::vector<std::vector<StoredSlice>> found(registry.size());
  for (size_t i = 0; i < registry.size(); ++i) {
    const StateEntry& entry = registry.entries()[i];
    if (entry.kind != EntryKind::kTensor) continue;
    if (!file.dataset_set.contains(entry.name)) return false;
    try {
      found[i].push_back(inspect_slice(file, index, entry));
    } catch (const CheckpointError&) {
      return false;  // the full check below reports it
    }
    if (!(found[i].back().region == entry.region())) return false;
  }
  stored = std::move(found);
  return true;
}

// An entry's dataset, opened and checked against the registered kind.
struct OpenScalar {
  const StateEntry* entry;
  H5Dataset dataset;
  hid_t type;  // memory type to read with (predefined or owned by string_type)
  H5Type string_type;
  uint32_t stored_checksum;
};

OpenScalar open_scalar(hid_t file, const StateEntry& entry, const std::string& path) {
  const std::string where = h5::entry_where(path, entry);
  OpenScalar open{&entry,
                  H5Dataset(HDF5_CHECK(H5Dopen2(file, entry.name.c_str(), H5P_DEFAULT), where)),
                  H5I_INVALID_HID, H5Type(), 0};
  const hid_t dataset = open.dataset.get();
  H5Type file_type(HDF5_CHECK(H5Dget_type(dataset), where));
  const std::vector<int64_t> dims = h5::dataset_dims(dataset, where);
  bool type_ok = false;
  if (entry.kind == EntryKind::kInt) {
    open.type = H5T_STD_I64LE;
    type_ok = H5Tequal(file_type.get(), open.type) > 0;
  } else if (entry.kind == EntryKind::kDouble) {
    open.type = H5T_IEEE_F64LE;
    type_ok = H5Tequal(file_type.get(), open.type) > 0;
  } else {
    type_ok =
        H5Tget_class(file_type.get()) == H5T_STRING && H5Tis_variable_str(file_type.get()) > 0;
    // HDF5 converts no string between ASCII and UTF-8: read with the file's character set.
    open.string_type = h5::make_string_type(where);
    if (type_ok) {
      HDF5_CHECK(H5Tset_cset(open.string_type.get(), H5Tget_cset(file_type.get())), where);
    }
    open.type = open.string_type.get();
  }
  MEMENTO_EXPECT(type_ok && dims.empty(), CheckpointError, where, ": expected a scalar ",
                 entry_kind_name(entry.kind), ", found ", h5::describe_type(file_type.get()), " ",
                 h5::dims_str(dims));
  open.stored_checksum = h5::read_attr_u32(dataset, h5::kChecksumAttr, where);
  return open;
}

std::string read_string_entry(const OpenScalar& open, const std::string& path) {
  const std::string where = h5::entry_where(path, *open.entry);
  char* data = nullptr;
  HDF5_CHECK(H5Dread(open.dataset.get(), open.type, H5S_ALL, H5S_ALL, H5P_DEFAULT, &data), where);
  std::string value = data != nullptr ? data : "";
  H5free_memory(data);
  verify_checksum(open.stored_checksum, crc32c(value.data(), value.size()), where);
  return value;
}

template <typename T>
T read_number(const OpenScalar& open, const std::string& path) {
  const std::string where = h5::entry_where(path, *open.entry);
  T value{};
  HDF5_CHECK(H5Dread(open.dataset.get(), open.type, H5S_ALL, H5S_ALL, H5P_DEFAULT, &value), where);
  verify_checksum(open.stored_checksum, crc32c(&value, sizeof(value)), where);
  return value;
}

// Reads the pieces of `plan` from their stored slices into the entry's buffer, one read per
// stored slice, verifying each stored slice's checksum.
void read_tensor(const StateEntry& entry, const CoverPlan& plan,
                 const std::vector<StoredSlice>& stored, const std::vector<RankFile>& files) {
  const DType dtype = entry.tensor.dtype();
  const TensorRegion dest = entry.region();
  std::vector<std::vector<TensorBox>> pieces(stored.size());
  std::vector<size_t> sources;  // in the order the plan first takes them
  for (const SlicePiece& piece : plan.pieces) {
    if (pieces[piece.source].empty()) sources.push_back(piece.source);
    pieces[piece.source].push_back(piece.box);
  }
  for (const size_t source : sources) {
    const StoredSlice& slice = stored[source];
    const RankFile& file = files[slice.file];
    const std::string where = h5::entry_where(file.path, entry);
    const H5Dataset dataset(
        HDF5_CHECK(H5Dopen2(file.file.get(), entry.name.c_str(), H5P_DEFAULT), where));
    const uint32_t computed =
        h5::read_pieces_checksummed(dataset.get(), h5::storage_type(dtype), dtype_size(dtype),
                                    slice.region, pieces[source], dest, entry.tensor.raw(), where);
    verify_checksum(slice.checksum, computed, where);
  }
}

}  // namespace

void load_checkpoint(const StateRegistry& registry, const std::string& checkpoint_dir, int rank,
                     const LoadOptions& options) {
  const auto lock = h5::lock();
  std::vector<RankFile> files;
  files.push_back(open_member(checkpoint_dir, 0));
  const int64_t world = files[0].world;
  const int64_t step = files[0].step;
  MEMENTO_EXPECT(world >= 1, CheckpointError, files[0].path, ": world ", world);
  const auto open_more = [&](int r) {
    files.push_back(open_member(checkpoint_dir, r));
    const RankFile& f = files.back();
    MEMENTO_EXPECT(f.step == step && f.world == world, CheckpointError, f.path, ": holds step ",
                   f.step, " of ", f.world, " ranks, but ", rank_file_name(0), " step ", step,
                   " of ", world, " ranks");
  };
  // Resuming with the world that saved, the file of the same rank holds exactly the registered
  // slices: read only it. Otherwise (resharding) every rank file may hold a part.
  const int home_rank = rank >= 0 && rank < world ? rank : 0;
  if (home_rank != 0) open_more(home_rank);
  std::vector<std::vector<StoredSlice>> stored(registry.size());
  const bool exact = holds_exactly(files.back(), files.size() - 1, registry, stored);
  if (!exact) {
    for (int r = 1; r < world; ++r) {
      if (r != home_rank) open_more(r);
    }
  }
  const std::string& scalars = files[0].path;  // every rank saved them; rank 0's are read
  const std::string where_all = files.size() == 1 ? files[0].path : checkpoint_dir;

  // Everything is checked before the first byte lands in a registered buffer.
  std::vector<std::string> missing;
  for (const StateEntry& entry : registry) {
    bool found = false;
    if (entry.kind == EntryKind::kTensor) {
      for (const RankFile& f : files) found = found || f.dataset_set.contains(entry.name);
    } else {
      found = files[0].dataset_set.contains(entry.name);
    }
    if (found) continue;
    missing.push_back(entry.kind == EntryKind::kTensor
                          ? ::memento::detail::concat(entry.name, " (",
                                                      dtype_name(entry.tensor.dtype()), " ",
                                                      entry.full_shape.str(), ")")
                          : entry.name);
  }
  MEMENTO_EXPECT(missing.empty(), CheckpointError, where_all, ": ", missing.size(),
                 " registered entries are missing from the checkpoint: ", list_names(missing));
  if (!options.allow_unregistered) {
    std::vector<std::string> extra;
    std::unordered_set<std::string> seen;
    for (const RankFile& f : files) {
      for (const std::string& name : f.datasets) {
        if (!registry.contains(name) && seen.insert(name).second) extra.push_back(name);
      }
    }
    MEMENTO_EXPECT(
        extra.empty(), CheckpointError, where_all, ": the checkpoint holds ", extra.size(),
        " entries that are not registered (a checkpoint of another model?): ", list_names(extra));
  }
  std::vector<CoverPlan> plans(registry.size());
  std::vector<OpenScalar> opened;
  for (size_t i = 0; i < registry.size(); ++i) {
    const StateEntry& entry = registry.entries()[i];
    if (entry.kind != EntryKind::kTensor) {
      opened.push_back(open_scalar(files[0].file.get(), entry, scalars));
      continue;
    }
    if (!exact) {
      for (size_t f = 0; f < files.size(); ++f) {
        if (files[f].dataset_set.contains(entry.name)) {
          stored[i].push_back(inspect_slice(files[f], f, entry));
        }
      }
    }
    std::vector<TensorRegion> regions;
    for (const StoredSlice& s : stored[i]) regions.push_back(s.region);
    plans[i] = plan_cover(entry.region(), regions);
    MEMENTO_EXPECT(!plans[i].gap, CheckpointError, where_all, ": tensor ", entry.name,
                   ": elements ", plans[i].gap->str(), " of the saved tensor (shape ",
                   entry.full_shape.str(), ") are in no rank file");
  }

  // Tensors straight into their buffers; scalars and strings staged until all is verified.
  for (size_t i = 0; i < registry.size(); ++i) {
    const StateEntry& entry = registry.entries()[i];
    if (entry.kind == EntryKind::kTensor) read_tensor(entry, plans[i], stored[i], files);
  }
  std::vector<int64_t> ints;
  std::vector<double> doubles;
  std::vector<std::string> strings;
  for (const OpenScalar& open : opened) {
    if (open.entry->kind == EntryKind::kInt) ints.push_back(read_number<int64_t>(open, scalars));
    if (open.entry->kind == EntryKind::kDouble) {
      doubles.push_back(read_number<double>(open, scalars));
    }
    if (open.entry->kind == EntryKind::kString) strings.push_back(read_string_entry(open, scalars));
  }
  size_t next_int = 0, next_double = 0, next_string = 0;
  for (const StateEntry& entry : registry) {
    if (entry.kind == EntryKind::kInt) *entry.int_value = ints[next_int++];
    if (entry.kind == EntryKind::kDouble) *entry.double_value = doubles[next_double++];
    if (entry.kind == EntryKind::kString) *entry.string_value = std::move(strings[next_string++]);
  }
}

std::string read_string(const std::string& checkpoint_dir, const std::string& name, int rank) {
  const auto lock = h5::lock();
  const std::string path = join_path(checkpoint_dir, rank_file_name(rank));
  const H5File file = h5::open_rank_file(path);
  MEMENTO_EXPECT(valid_state_name(name) && dataset_exists(file.get(), name, path), CheckpointError,
                 path, ": no string entry ", name);
  std::string unused;
  StateEntry entry;
  entry.name = name;
  entry.kind = EntryKind::kString;
  entry.string_value = &unused;
  return read_string_entry(open_scalar(file.get(), entry, path), path);
}

}  // namespace memento::checkpoint
