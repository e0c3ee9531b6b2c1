#include "checkpoint/hdf5_checkpoint.h"

#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <functional>
#include <system_error>
#include <utility>
#include <vector>

#include "checkpoint/checkpoint_dir.h"
#include "checkpoint/crc32c.h"
#include "checkpoint/format_version.h"
#include "checkpoint/hdf5_handles.h"

namespace memento::checkpoint {
namespace fs = std::filesystem;
namespace {

constexpr int kWorld = 1;                     // one rank until the distributed engine
constexpr hsize_t kAlignThreshold = 1 << 20;  // datasets from 1 MiB up start ...
constexpr hsize_t kAlignment = 4096;          // ... on a page boundary
constexpr size_t kMaxListedNames = 5;         // names quoted in one error message
constexpr char kChecksumAttr[] = "crc32c";
constexpr char kDTypeAttr[] = "dtype";

detail::SaveHook g_save_hook = nullptr;

void reach(const char* point) {
  if (g_save_hook != nullptr) g_save_hook(point);
}

// The HDF5 type a dtype is stored as. The narrow floats have no HDF5 type that other tools read,
// so they are stored as unsigned integers of their width, bit for bit; the "dtype" attribute says
// what they are.
hid_t storage_type(DType dtype) {
  switch (dtype) {
    case DType::kF32:
      return H5T_IEEE_F32LE;
    case DType::kF64:
      return H5T_IEEE_F64LE;
    case DType::kI32:
      return H5T_STD_I32LE;
    case DType::kI64:
      return H5T_STD_I64LE;
    case DType::kU16:
    case DType::kBF16:
    case DType::kF16:
      return H5T_STD_U16LE;
    case DType::kF8E4M3:
    case DType::kF8E5M2:
      return H5T_STD_U8LE;
  }
  MEMENTO_CHECK(false, "unknown dtype ", static_cast<int>(dtype));
  return H5I_INVALID_HID;
}

std::string describe_type(hid_t type) {
  const size_t bits = H5Tget_size(type) * 8;
  switch (H5Tget_class(type)) {
    case H5T_FLOAT:
      return "float" + std::to_string(bits);
    case H5T_INTEGER:
      return (H5Tget_sign(type) == H5T_SGN_NONE ? "uint" : "int") + std::to_string(bits);
    case H5T_STRING:
      return "string";
    default:
      return "an HDF5 type of class " + std::to_string(static_cast<int>(H5Tget_class(type)));
  }
}

std::string dims_str(const std::vector<hsize_t>& dims) {
  std::string s = "[";
  for (size_t i = 0; i < dims.size(); ++i) s += (i ? ", " : "") + std::to_string(dims[i]);
  return s + "]";
}

std::string list_names(const std::vector<std::string>& names) {
  std::string s;
  for (size_t i = 0; i < std::min(names.size(), kMaxListedNames); ++i) {
    s += (i ? ", " : "") + names[i];
  }
  if (names.size() > kMaxListedNames) s += ", ...";
  return s;
}

uint32_t checksum(const StateEntry& entry) {
  switch (entry.kind) {
    case EntryKind::kTensor:
      return crc32c(entry.tensor.raw(), entry.tensor.bytes());
    case EntryKind::kInt:
      return crc32c(entry.int_value, sizeof(int64_t));
    case EntryKind::kDouble:
      return crc32c(entry.double_value, sizeof(double));
    case EntryKind::kString:
      return crc32c(entry.string_value->data(), entry.string_value->size());
  }
  return 0;
}

std::string utc_now() {
  const std::time_t now = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&now, &tm);
  char text[32];
  std::strftime(text, sizeof(text), "%Y-%m-%dT%H:%M:%SZ", &tm);
  return text;
}

void expect_host_tensor(const StateEntry& entry, const std::string& file) {
  MEMENTO_EXPECT(entry.tensor.device().is_cpu(), CheckpointError, file, ": tensor ", entry.name,
                 " is on ", device_name(entry.tensor.device()),
                 "; HDF5 checkpoints read and write host memory only");
}

// ---------------------------------------------------------------------------------------------
// Writing

void write_entry(hid_t file, hid_t lcpl, const StateEntry& entry, const std::string& path) {
  const std::string object = "/" + entry.name;
  const std::string where =
      path + ": " + std::string(entry_kind_name(entry.kind)) + " " + entry.name;
  H5Space space;
  hid_t type = H5I_INVALID_HID;
  H5Type string_type;
  const void* data = nullptr;
  const char* string_data = nullptr;
  if (entry.kind == EntryKind::kTensor) {
    const TensorView& t = entry.tensor;
    if (t.ndim() == 0) {
      space = H5Space(HDF5_CHECK(H5Screate(H5S_SCALAR), where));
    } else {
      std::vector<hsize_t> dims(t.ndim());
      for (int i = 0; i < t.ndim(); ++i) dims[i] = static_cast<hsize_t>(t.size(i));
      space = H5Space(HDF5_CHECK(H5Screate_simple(t.ndim(), dims.data(), nullptr), where));
    }
    type = storage_type(t.dtype());
    data = t.numel() > 0 ? t.raw() : nullptr;
  } else {
    space = H5Space(HDF5_CHECK(H5Screate(H5S_SCALAR), where));
    if (entry.kind == EntryKind::kInt) {
      type = H5T_STD_I64LE;
      data = entry.int_value;
    } else if (entry.kind == EntryKind::kDouble) {
      type = H5T_IEEE_F64LE;
      data = entry.double_value;
    } else {
      // HDF5 variable-length strings end at the first NUL.
      MEMENTO_EXPECT(entry.string_value->find('\0') == std::string::npos, CheckpointError, where,
                     ": strings with NUL bytes cannot be stored");
      string_type = h5::make_string_type(where);
      type = string_type.get();
      string_data = entry.string_value->c_str();
      data = &string_data;
    }
  }
  H5Dataset dataset(HDF5_CHECK(
      H5Dcreate2(file, object.c_str(), type, space.get(), lcpl, H5P_DEFAULT, H5P_DEFAULT), where));
  if (data != nullptr) {
    HDF5_CHECK(H5Dwrite(dataset.get(), type, H5S_ALL, H5S_ALL, H5P_DEFAULT, data), where);
  }
  if (entry.kind == EntryKind::kTensor) {
    h5::write_attr_string(dataset.get(), kDTypeAttr, std::string(dtype_name(entry.tensor.dtype())),
                          where);
  }
  h5::write_attr_u32(dataset.get(), kChecksumAttr, checksum(entry), where);
}

void write_rank_file(const StateRegistry& registry, const std::string& path, int64_t step,
                     int rank) {
  H5Plist fapl(HDF5_CHECK(H5Pcreate(H5P_FILE_ACCESS), path));
  // Closing the file closes every object in it, so its close flushes everything at once.
  HDF5_CHECK(H5Pset_fclose_degree(fapl.get(), H5F_CLOSE_STRONG), path);
  HDF5_CHECK(H5Pset_alignment(fapl.get(), kAlignThreshold, kAlignment), path);
  H5File file(HDF5_CHECK(H5Fcreate(path.c_str(), H5F_ACC_EXCL, H5P_DEFAULT, fapl.get()), path));
  const std::string where = path + ": root";
  h5::write_attr_string(file.get(), "format", "memento-checkpoint", where);
  h5::write_attr_i64(file.get(), "format_version", kFormatVersion, where);
  h5::write_attr_i64(file.get(), "step", step, where);
  h5::write_attr_i64(file.get(), "rank", rank, where);
  h5::write_attr_i64(file.get(), "world", kWorld, where);
  h5::write_attr_string(file.get(), "created_utc", utc_now(), where);
  h5::write_attr_string(file.get(), "memento_version", std::string(kMementoVersion), where);

  H5Plist lcpl(HDF5_CHECK(H5Pcreate(H5P_LINK_CREATE), path));
  HDF5_CHECK(H5Pset_create_intermediate_group(lcpl.get(), 1), path);
  for (const StateEntry& entry : registry) {
    write_entry(file.get(), lcpl.get(), entry, path);
    reach("dataset_written");
  }
  HDF5_CHECK(file.close(), path);
}

// ---------------------------------------------------------------------------------------------
// Reading

H5File open_hdf5_file(const std::string& path) {
  h5::init_library();
  std::error_code error;
  MEMENTO_EXPECT(fs::is_regular_file(path, error), CheckpointError, path,
                 ": no such checkpoint file");
  H5File file(HDF5_CHECK(H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT), path,
                         ": cannot open as HDF5 (truncated or not a checkpoint?)"));
  MEMENTO_EXPECT(h5::has_attr(file.get(), "format_version", path), CheckpointError, path,
                 ": not a Memento checkpoint (no format_version attribute)");
  return file;
}

// A rank file opened for reading, refused unless this build reads its format version.
H5File open_rank_file(const std::string& path) {
  H5File file = open_hdf5_file(path);
  const int64_t version = h5::read_attr_i64(file.get(), "format_version", path + ": root");
  MEMENTO_EXPECT(version == kFormatVersion, CheckpointError, path, ": format version ", version,
                 ", this build reads version ", kFormatVersion);
  return file;
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

// An entry's dataset, opened and checked against the registered kind, dtype and shape.
struct OpenEntry {
  const StateEntry* entry;
  H5Dataset dataset;
  hid_t type;  // memory type to read with (predefined or owned by string_type)
  H5Type string_type;
  uint32_t stored_checksum;
};

OpenEntry open_entry(hid_t file, const StateEntry& entry, const std::string& path) {
  const std::string where =
      path + ": " + std::string(entry_kind_name(entry.kind)) + " " + entry.name;
  OpenEntry open{&entry,
                 H5Dataset(HDF5_CHECK(H5Dopen2(file, entry.name.c_str(), H5P_DEFAULT), where)),
                 H5I_INVALID_HID, H5Type(), 0};
  const hid_t dataset = open.dataset.get();
  H5Type file_type(HDF5_CHECK(H5Dget_type(dataset), where));
  H5Space space(HDF5_CHECK(H5Dget_space(dataset), where));
  const int ndim = HDF5_CHECK(H5Sget_simple_extent_ndims(space.get()), where);
  std::vector<hsize_t> dims(ndim);
  HDF5_CHECK(H5Sget_simple_extent_dims(space.get(), dims.data(), nullptr), where);

  if (entry.kind == EntryKind::kTensor) {
    const TensorView& t = entry.tensor;
    expect_host_tensor(entry, path);
    MEMENTO_EXPECT(h5::has_attr(dataset, kDTypeAttr, where), CheckpointError, where,
                   ": not a tensor (no dtype attribute)");
    const std::string stored_dtype = h5::read_attr_string(dataset, kDTypeAttr, where);
    MEMENTO_EXPECT(stored_dtype == dtype_name(t.dtype()), CheckpointError, where,
                   ": expected dtype ", dtype_name(t.dtype()), ", found ", stored_dtype);
    open.type = storage_type(t.dtype());
    MEMENTO_EXPECT(HDF5_CHECK(H5Tequal(file_type.get(), open.type), where) > 0, CheckpointError,
                   where, ": dtype ", stored_dtype, " stored as ", describe_type(file_type.get()),
                   ", expected ", describe_type(open.type));
    std::vector<hsize_t> expected(t.ndim());
    for (int i = 0; i < t.ndim(); ++i) expected[i] = static_cast<hsize_t>(t.size(i));
    MEMENTO_EXPECT(dims == expected, CheckpointError, where, ": expected shape ", t.shape().str(),
                   ", found ", dims_str(dims));
  } else {
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
    MEMENTO_EXPECT(type_ok && ndim == 0, CheckpointError, where, ": expected a scalar ",
                   entry_kind_name(entry.kind), ", found ", describe_type(file_type.get()), " ",
                   dims_str(dims));
  }
  open.stored_checksum = h5::read_attr_u32(dataset, kChecksumAttr, where);
  return open;
}

void verify_checksum(const OpenEntry& open, uint32_t computed, const std::string& path) {
  char text[64];
  std::snprintf(text, sizeof(text), "(stored 0x%08x, computed 0x%08x)", open.stored_checksum,
                computed);
  MEMENTO_EXPECT(computed == open.stored_checksum, CheckpointError, path, ": ",
                 entry_kind_name(open.entry->kind), " ", open.entry->name, ": checksum mismatch ",
                 text, ": the checkpoint is corrupted");
}

std::string read_string_entry(const OpenEntry& open, const std::string& path) {
  char* data = nullptr;
  HDF5_CHECK(H5Dread(open.dataset.get(), open.type, H5S_ALL, H5S_ALL, H5P_DEFAULT, &data), path,
             ": string ", open.entry->name);
  std::string value = data != nullptr ? data : "";
  H5free_memory(data);
  verify_checksum(open, crc32c(value.data(), value.size()), path);
  return value;
}

std::string checkpoint_dir_of(const std::string& dir) {
  fs::path p(dir);
  if (p.filename().empty()) p = p.parent_path();
  return p.string();
}

// Complete step directories of `root`, newest first.
std::vector<std::pair<int64_t, std::string>> complete_checkpoints(const std::string& root) {
  std::vector<std::pair<int64_t, std::string>> found;
  std::error_code error;
  for (const auto& item : fs::directory_iterator(root, error)) {
    const std::string name = item.path().filename().string();
    const auto step = parse_step_dir_name(name);
    if (step && is_complete_checkpoint(item.path().string())) found.emplace_back(*step, name);
  }
  std::sort(found.begin(), found.end(), std::greater<>());
  return found;
}

void before_latest_rename() { reach("latest_tmp_written"); }

}  // namespace

void save_checkpoint(const StateRegistry& registry, const std::string& root, int64_t step,
                     int rank) {
  h5::init_library();
  MEMENTO_EXPECT(step >= 0, CheckpointError, root, ": cannot save step ", step);
  MEMENTO_EXPECT(rank == 0, CheckpointError, root, ": rank ", rank,
                 ": multi-rank HDF5 checkpoints are not implemented yet (world must be 1)");
  const std::string name = step_dir_name(step);
  const std::string final_dir = join_path(root, name);
  const std::string tmp_dir = join_path(root, "." + name + ".tmp." + std::to_string(::getpid()));
  const std::string file = join_path(tmp_dir, rank_file_name(rank));
  for (const StateEntry& entry : registry) {
    if (entry.kind == EntryKind::kTensor) expect_host_tensor(entry, final_dir);
  }

  std::error_code error;
  fs::create_directories(root, error);
  MEMENTO_EXPECT(!error, CheckpointError, "cannot create checkpoint root ", root, ": ",
                 error.message());
  fs::remove_all(tmp_dir, error);  // left by an earlier crash of a process with our pid
  fs::create_directory(tmp_dir, error);
  MEMENTO_EXPECT(!error, CheckpointError, "cannot create ", tmp_dir, ": ", error.message());
  reach("tmp_dir_created");
  try {
    write_rank_file(registry, file, step, rank);
    reach("file_written");
    fsync_file(file);
    fsync_dir(tmp_dir);
    reach("file_synced");
    publish_directory(tmp_dir, final_dir);
  } catch (...) {
    fs::remove_all(tmp_dir, error);
    throw;
  }
  reach("dir_published");
  write_file_atomic(join_path(root, kLatestFileName), name + "\n", before_latest_rename);
  reach("latest_published");
}

void load_checkpoint(const StateRegistry& registry, const std::string& checkpoint_dir, int rank,
                     const LoadOptions& options) {
  const std::string path = join_path(checkpoint_dir, rank_file_name(rank));
  const H5File file = open_rank_file(path);
  const int64_t stored_rank = h5::read_attr_i64(file.get(), "rank", path + ": root");
  MEMENTO_EXPECT(stored_rank == rank, CheckpointError, path, ": holds rank ", stored_rank,
                 ", expected rank ", rank);

  // Everything is checked before the first byte lands in a registered buffer.
  std::vector<std::string> missing;
  for (const StateEntry& entry : registry) {
    if (dataset_exists(file.get(), entry.name, path)) continue;
    missing.push_back(entry.kind == EntryKind::kTensor
                          ? ::memento::detail::concat(entry.name, " (",
                                                      dtype_name(entry.tensor.dtype()), " ",
                                                      entry.tensor.shape().str(), ")")
                          : entry.name);
  }
  MEMENTO_EXPECT(missing.empty(), CheckpointError, path, ": ", missing.size(),
                 " registered entries are missing from the checkpoint: ", list_names(missing));
  if (!options.allow_unregistered) {
    std::vector<std::string> extra;
    for (const std::string& name : list_datasets(file.get(), path)) {
      if (!registry.contains(name)) extra.push_back(name);
    }
    MEMENTO_EXPECT(
        extra.empty(), CheckpointError, path, ": the checkpoint holds ", extra.size(),
        " entries that are not registered (a checkpoint of another model?): ", list_names(extra));
  }
  std::vector<OpenEntry> opened;
  opened.reserve(registry.size());
  for (const StateEntry& entry : registry) opened.push_back(open_entry(file.get(), entry, path));

  // Tensors straight into their buffers; scalars and strings staged until all is verified.
  std::vector<int64_t> ints;
  std::vector<double> doubles;
  std::vector<std::string> strings;
  for (const OpenEntry& open : opened) {
    const StateEntry& entry = *open.entry;
    const std::string where =
        path + ": " + std::string(entry_kind_name(entry.kind)) + " " + entry.name;
    if (entry.kind == EntryKind::kTensor) {
      if (entry.tensor.numel() > 0) {
        HDF5_CHECK(H5Dread(open.dataset.get(), open.type, H5S_ALL, H5S_ALL, H5P_DEFAULT,
                           entry.tensor.raw()),
                   where);
      }
      verify_checksum(open, checksum(entry), path);
    } else if (entry.kind == EntryKind::kInt) {
      int64_t value = 0;
      HDF5_CHECK(H5Dread(open.dataset.get(), open.type, H5S_ALL, H5S_ALL, H5P_DEFAULT, &value),
                 where);
      verify_checksum(open, crc32c(&value, sizeof(value)), path);
      ints.push_back(value);
    } else if (entry.kind == EntryKind::kDouble) {
      double value = 0;
      HDF5_CHECK(H5Dread(open.dataset.get(), open.type, H5S_ALL, H5S_ALL, H5P_DEFAULT, &value),
                 where);
      verify_checksum(open, crc32c(&value, sizeof(value)), path);
      doubles.push_back(value);
    } else {
      strings.push_back(read_string_entry(open, path));
    }
  }
  size_t next_int = 0, next_double = 0, next_string = 0;
  for (const StateEntry& entry : registry) {
    if (entry.kind == EntryKind::kInt) *entry.int_value = ints[next_int++];
    if (entry.kind == EntryKind::kDouble) *entry.double_value = doubles[next_double++];
    if (entry.kind == EntryKind::kString) *entry.string_value = std::move(strings[next_string++]);
  }
}

bool is_complete_checkpoint(const std::string& dir) {
  const std::string normal = checkpoint_dir_of(dir);
  const auto step = parse_step_dir_name(fs::path(normal).filename().string());
  if (!step) return false;
  std::error_code error;
  if (!fs::is_directory(normal, error)) return false;
  try {
    // Another format version still counts as complete: loading it then says why it is refused,
    // rather than resuming from an older checkpoint or from scratch without a word.
    const std::string path = join_path(normal, rank_file_name(0));
    const H5File file = open_hdf5_file(path);
    const std::string where = path + ": root";
    if (h5::read_attr_i64(file.get(), "step", where) != *step) return false;
    const int64_t world = h5::read_attr_i64(file.get(), "world", where);
    if (world < 1) return false;
    for (int r = 1; r < world; ++r) {
      if (!fs::is_regular_file(join_path(normal, rank_file_name(r)), error)) return false;
    }
  } catch (const CheckpointError&) {
    return false;
  }
  return true;
}

std::optional<std::string> find_latest(const std::string& root) {
  if (const auto latest = read_latest_pointer(root)) {
    const std::string dir = join_path(root, *latest);
    if (is_complete_checkpoint(dir)) return dir;
  }
  const auto found = complete_checkpoints(root);
  if (found.empty()) return std::nullopt;
  return join_path(root, found.front().second);
}

std::string read_string(const std::string& checkpoint_dir, const std::string& name, int rank) {
  const std::string path = join_path(checkpoint_dir, rank_file_name(rank));
  const H5File file = open_rank_file(path);
  MEMENTO_EXPECT(valid_state_name(name) && dataset_exists(file.get(), name, path), CheckpointError,
                 path, ": no string entry ", name);
  std::string unused;
  StateEntry entry;
  entry.name = name;
  entry.kind = EntryKind::kString;
  entry.string_value = &unused;
  const OpenEntry open = open_entry(file.get(), entry, path);
  return read_string_entry(open, path);
}

CheckpointInfo read_checkpoint_info(const std::string& checkpoint_dir, int rank) {
  const std::string path = join_path(checkpoint_dir, rank_file_name(rank));
  const H5File file = open_hdf5_file(path);
  const std::string where = path + ": root";
  CheckpointInfo info;
  info.format_version = h5::read_attr_i64(file.get(), "format_version", where);
  info.step = h5::read_attr_i64(file.get(), "step", where);
  info.rank = h5::read_attr_i64(file.get(), "rank", where);
  info.world = h5::read_attr_i64(file.get(), "world", where);
  info.created_utc = h5::read_attr_string(file.get(), "created_utc", where);
  info.memento_version = h5::read_attr_string(file.get(), "memento_version", where);
  return info;
}

void prune_checkpoints(const std::string& root, int keep) {
  h5::init_library();
  MEMENTO_EXPECT(keep >= 1, CheckpointError, root, ": cannot keep ", keep,
                 " checkpoints; keep at least 1");
  const auto latest = read_latest_pointer(root);
  const auto found = complete_checkpoints(root);
  for (size_t i = static_cast<size_t>(keep); i < found.size(); ++i) {
    if (latest && found[i].second == *latest) continue;
    remove_directory_safely(join_path(root, found[i].second));
  }
}

namespace detail {

void set_save_hook(SaveHook hook) { g_save_hook = hook; }

uint64_t tensor_file_offset(const std::string& file, const std::string& name) {
  const H5File f = open_hdf5_file(file);
  const std::string object = "/" + name;
  const H5Dataset d(HDF5_CHECK(H5Dopen2(f.get(), object.c_str(), H5P_DEFAULT), file, ": ", name,
                               ": no such tensor"));
  const haddr_t offset = H5Dget_offset(d.get());
  MEMENTO_EXPECT(offset != HADDR_UNDEF, CheckpointError, file, ": ", name,
                 ": data is not stored contiguously");
  return offset;
}

}  // namespace detail
}  // namespace memento::checkpoint
