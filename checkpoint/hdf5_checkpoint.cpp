// Saving (every rank writes its file, rank 0 publishes the directory), and finding, describing
// and pruning published checkpoints. Loading is in hdf5_load.cpp.
#include "checkpoint/hdf5_checkpoint.h"

#include <algorithm>
#include <ctime>
#include <exception>
#include <filesystem>
#include <functional>
#include <system_error>
#include <utility>
#include <vector>

#include "checkpoint/checkpoint_dir.h"
#include "checkpoint/format_version.h"
#include "checkpoint/hdf5_format.h"

namespace memento::checkpoint {
namespace fs = std::filesystem;
namespace {

constexpr hsize_t kAlignThreshold = 1 << 20;  // datasets from 1 MiB up start ...
constexpr hsize_t kAlignment = 4096;          // ... on a page boundary

detail::SaveHook g_save_hook = nullptr;

void reach(const char* point) {
  if (g_save_hook != nullptr) g_save_hook(point);
}

std::string utc_now() {
  const std::time_t now = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&now, &tm);
  char text[32];
  std::strftime(text, sizeof(text), "%Y-%m-%dT%H:%M:%SZ", &tm);
  return text;
}

// ---------------------------------------------------------------------------------------------
// Writing one rank file

void write_entry(hid_t file, hid_t lcpl, const StateEntry& entry, const std::string& path) {
  const std::string object = "/" + entry.name;
  const std::string where = h5::entry_where(path, entry);
  H5Space space;
  hid_t type = H5I_INVALID_HID;
  H5Type string_type;
  const void* data = nullptr;
  const char* string_data = nullptr;
  if (entry.kind == EntryKind::kTensor) {
    // A flat slice is registered 1-D, so it is stored as a 1-D dataset of its length; a box
    // with the box's shape.
    const TensorView& t = entry.tensor;
    if (t.ndim() == 0) {
      space = H5Space(HDF5_CHECK(H5Screate(H5S_SCALAR), where));
    } else {
      std::vector<hsize_t> dims(t.ndim());
      for (int i = 0; i < t.ndim(); ++i) dims[i] = static_cast<hsize_t>(t.size(i));
      space = H5Space(HDF5_CHECK(H5Screate_simple(t.ndim(), dims.data(), nullptr), where));
    }
    type = h5::storage_type(t.dtype());
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
    h5::write_attr_string(dataset.get(), h5::kDTypeAttr,
                          std::string(dtype_name(entry.tensor.dtype())), where);
    if (entry.is_box || entry.is_partial()) {
      h5::write_attr_i64_array(dataset.get(), h5::kFullShapeAttr, h5::dims_of(entry.full_shape),
                               where);
    }
    if (entry.is_box) {
      h5::write_attr_i64_array(dataset.get(), h5::kBoxStartAttr, h5::dims_of(entry.box_start),
                               where);
    } else if (entry.is_partial()) {
      h5::write_attr_i64(dataset.get(), h5::kOffsetAttr, entry.offset, where);
    }
  }
  h5::write_attr_u32(dataset.get(), h5::kChecksumAttr, h5::checksum(entry), where);
}

void write_rank_file(const StateRegistry& registry, const std::string& path, int64_t step, int rank,
                     int world) {
  const auto lock = h5::lock();
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
  h5::write_attr_i64(file.get(), "world", world, where);
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
// The steps of a save (docs/checkpoint-format.md, "Publish protocol")

// Rank 0, before the others write: a fresh tmp directory. Whatever a killed save or prune left
// (its tmp directory, a .latest.tmp.<pid> file, a directory half deleted) goes first: no reader
// looks at them, and they would pile up over restarts.
void create_tmp_dir(const std::string& root, const std::string& tmp_dir) {
  std::error_code error;
  fs::create_directories(root, error);
  MEMENTO_EXPECT(!error, CheckpointError, "cannot create checkpoint root ", root, ": ",
                 error.message());
  remove_stale_temporaries(root);
  fs::create_directory(tmp_dir, error);
  MEMENTO_EXPECT(!error, CheckpointError, "cannot create ", tmp_dir, ": ", error.message());
  reach("tmp_dir_created");
}

// Every rank: its file, written under a hidden name and renamed when durable, so that a rank
// file under its real name is a complete one.
void write_rank_file_durably(const StateRegistry& registry, const std::string& tmp_dir,
                             int64_t step, int rank, int world) {
  const std::string name = rank_file_name(rank);
  const std::string file = join_path(tmp_dir, name);
  const std::string partial = join_path(tmp_dir, "." + name + ".tmp");
  for (const StateEntry& entry : registry) {
    if (entry.kind == EntryKind::kTensor) h5::expect_host_tensor(entry, file);
  }
  write_rank_file(registry, partial, step, rank, world);
  reach("file_written");
  fsync_file(partial);
  reach("file_synced");
  std::error_code error;
  fs::rename(partial, file, error);
  MEMENTO_EXPECT(!error, CheckpointError, "cannot rename ", partial, " to ", file, ": ",
                 error.message());
}

// Rank 0, after every rank wrote: publish the directory if every rank file is there.
void publish(const std::string& root, const std::string& tmp_dir, const std::string& name,
             int world) {
  std::vector<std::string> absent;
  std::error_code error;
  for (int r = 0; r < world; ++r) {
    if (!fs::is_regular_file(join_path(tmp_dir, rank_file_name(r)), error)) {
      absent.push_back(rank_file_name(r));
    }
  }
  MEMENTO_EXPECT(absent.empty(), CheckpointError, tmp_dir, ": ", absent.size(), " of ", world,
                 " rank files were not written (", absent.front(), absent.size() > 1 ? ", ..." : "",
                 "), so ", name, " is not published; the other ranks' errors say why");
  fsync_dir(tmp_dir);  // the renames of every rank's file
  const std::string final_dir = join_path(root, name);
  publish_directory(tmp_dir, final_dir);
  reach("dir_published");
  write_file_atomic(join_path(root, kLatestFileName), name + "\n",
                    [] { reach("latest_tmp_written"); });
  reach("latest_published");
}

// Complete step directories of `root`, newest first. With `skipped`, every step_* directory that
// is not complete is added to it with the reason.
std::vector<std::pair<int64_t, std::string>> complete_checkpoints(
    const std::string& root,
    std::vector<std::pair<int64_t, SkippedCheckpoint>>* skipped = nullptr) {
  std::vector<std::pair<int64_t, std::string>> found;
  std::error_code error;
  for (const auto& item : fs::directory_iterator(root, error)) {
    const std::string name = item.path().filename().string();
    const auto step = parse_step_dir_name(name);
    if (!step) continue;
    if (const auto problem = checkpoint_problem(item.path().string())) {
      if (skipped != nullptr) skipped->push_back({*step, {item.path().string(), *problem}});
    } else {
      found.emplace_back(*step, name);
    }
  }
  std::sort(found.begin(), found.end(), std::greater<>());
  return found;
}

std::string checkpoint_dir_of(const std::string& dir) {
  fs::path p(dir);
  if (p.filename().empty()) p = p.parent_path();
  return p.string();
}

}  // namespace

void save_checkpoint(const StateRegistry& registry, const std::string& root, int64_t step, int rank,
                     int world, const std::function<void()>& barrier) {
  h5::init_library();
  MEMENTO_EXPECT(step >= 0, CheckpointError, root, ": cannot save step ", step);
  MEMENTO_EXPECT(world >= 1 && 0 <= rank && rank < world, CheckpointError, root, ": rank ", rank,
                 " of ", world, " ranks cannot save");
  MEMENTO_CHECK(world == 1 || barrier, "save_checkpoint: ", world, " ranks need a barrier");
  const std::string name = step_dir_name(step);
  const std::string tmp_dir = join_path(root, "." + name + ".tmp");
  const auto sync = [&] {
    if (barrier) barrier();
  };
  // A rank that fails still takes part in every barrier, so that no rank waits forever, and
  // rethrows at the end; rank 0 then publishes nothing.
  std::exception_ptr failure;
  const auto attempt = [&](const auto& action) {
    if (failure) return;
    try {
      action();
    } catch (...) {
      failure = std::current_exception();
    }
  };
  if (rank == 0) attempt([&] { create_tmp_dir(root, tmp_dir); });
  sync();
  attempt([&] { write_rank_file_durably(registry, tmp_dir, step, rank, world); });
  sync();
  if (rank == 0) {
    attempt([&] { publish(root, tmp_dir, name, world); });
    if (failure) {
      std::error_code ignored;
      fs::remove_all(tmp_dir, ignored);
    }
  }
  sync();  // no rank returns before the checkpoint is published
  if (failure) std::rethrow_exception(failure);
}

std::optional<std::string> checkpoint_problem(const std::string& dir) {
  const std::string normal = checkpoint_dir_of(dir);
  const auto step = parse_step_dir_name(fs::path(normal).filename().string());
  if (!step) return "not a step_<N> directory name";
  std::error_code error;
  if (!fs::is_directory(normal, error)) return "not a directory";
  const auto lock = h5::lock();
  try {
    // Another format version still counts as complete: loading it then says why it is refused,
    // rather than resuming from an older checkpoint or from scratch without a word.
    int64_t world = 1;
    for (int r = 0; r < world; ++r) {
      const std::string name = rank_file_name(r);
      const std::string path = join_path(normal, name);
      if (!fs::exists(path, error)) {
        return r == 0 ? name + " is missing"
                      : memento::detail::concat(name, " is missing (", rank_file_name(0), " says ",
                                                world, " ranks saved)");
      }
      const H5File file = h5::open_hdf5_file(path);
      const std::string where = path + ": root";
      const int64_t file_step = h5::read_attr_i64(file.get(), "step", where);
      if (file_step != *step) return memento::detail::concat(name, " is of step ", file_step);
      const int64_t file_rank = h5::read_attr_i64(file.get(), "rank", where);
      if (file_rank != r) return memento::detail::concat(name, " says it is rank ", file_rank);
      const int64_t file_world = h5::read_attr_i64(file.get(), "world", where);
      if (r == 0) world = file_world;
      if (world < 1) return memento::detail::concat(name, " says ", world, " ranks saved");
      if (file_world != world) {
        return memento::detail::concat(name, " says ", file_world, " ranks saved, ",
                                       rank_file_name(0), " says ", world);
      }
    }
  } catch (const CheckpointError& e) {
    return e.what();
  }
  return std::nullopt;
}

bool is_complete_checkpoint(const std::string& dir) { return !checkpoint_problem(dir); }

CheckpointSearch search_checkpoints(const std::string& root) {
  CheckpointSearch search;
  std::error_code error;
  for (const auto& item : fs::directory_iterator(root, error)) {
    const std::string name = item.path().filename().string();
    if (name.starts_with(".step_") && name.find(".tmp") != std::string::npos)
      search.unfinished.push_back(item.path().string());
  }
  std::sort(search.unfinished.begin(), search.unfinished.end());
  if (const auto latest = read_latest_pointer(root)) {
    const std::string dir = join_path(root, *latest);
    const auto problem = checkpoint_problem(dir);
    if (!problem) {
      search.found = dir;
      return search;
    }
    search.skipped.push_back(
        {dir, memento::detail::concat("named by ", join_path(root, kLatestFileName),
                                      " but not usable: ", *problem)});
  }
  std::vector<std::pair<int64_t, SkippedCheckpoint>> skipped;
  const auto found = complete_checkpoints(root, &skipped);
  if (!found.empty()) search.found = join_path(root, found.front().second);
  // Report the incomplete directories that are newer than the one resumed from (or all of them,
  // when none is complete): the work they held is what the resume loses.
  const int64_t found_step = found.empty() ? -1 : found.front().first;
  std::sort(skipped.begin(), skipped.end(),
            [](const auto& a, const auto& b) { return a.first > b.first; });
  for (auto& [step, s] : skipped) {
    const bool already = !search.skipped.empty() && search.skipped.front().dir == s.dir;
    if (step > found_step && !already) search.skipped.push_back(std::move(s));
  }
  return search;
}

std::optional<std::string> find_latest(const std::string& root) {
  return search_checkpoints(root).found;
}

CheckpointInfo read_checkpoint_info(const std::string& checkpoint_dir, int rank) {
  const auto lock = h5::lock();
  const std::string path = join_path(checkpoint_dir, rank_file_name(rank));
  const H5File file = h5::open_hdf5_file(path);
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
  const auto lock = h5::lock();
  const H5File f = h5::open_hdf5_file(file);
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
