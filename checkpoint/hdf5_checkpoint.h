// Synchronous HDF5 checkpoints of a StateRegistry: one file per rank in a step directory,
// published atomically (docs/checkpoint-format.md has the layout and the protocol).
//
//   save_checkpoint(registry, "ckpt", step);                  // ckpt/step_000000100/rank_00000.h5
//   if (auto dir = find_latest("ckpt")) load_checkpoint(registry, *dir);
//
//   // W ranks, each registering its slices (StateRegistry::add_tensor_slice for ZeRO-1 flat
//   // ranges, add_tensor_box for tensor-parallel blocks):
//   save_checkpoint(registry, "ckpt", step, comm.rank(), comm.size(), [&] { comm.barrier(); });
//   load_checkpoint(registry, *find_latest("ckpt"), comm.rank());  // any W and layout at save
//
// Every failure that is the file's or the filesystem's fault throws CheckpointError naming the
// file and the tensor or attribute at fault. HDF5 calls are serialized by a process-wide lock,
// so threads may call these functions concurrently (they then take turns).
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "checkpoint/state_registry.h"

namespace memento::checkpoint {

// Collective over `world` ranks: each writes its registered entries to
// <root>/step_<step>/rank_<rank>.h5 (tensor slices as slices, scalars and strings as they are,
// which must be the same on every rank); then rank 0 publishes the directory and points
// <root>/latest at it. `barrier` (required when world > 1) synchronizes the ranks; it is called
// three times, by every rank, even by one that failed, and no rank returns before the checkpoint
// is published. A crash of any rank at any moment leaves either the previous checkpoints or the
// new one complete, never a partial one that find_latest returns; a re-save of the same step
// replaces it atomically. On failure CheckpointError is thrown by the ranks that failed and by
// rank 0, which then publishes nothing; the other ranks may return normally. Tensors must be in
// host memory.
void save_checkpoint(const StateRegistry& registry, const std::string& root, int64_t step,
                     int rank = 0, int world = 1, const std::function<void()>& barrier = {});

struct LoadOptions {
  // Datasets in the file that are not registered are skipped instead of refused.
  bool allow_unregistered = false;
};

// Restores every registered entry in place, whatever the number of ranks and the layout that
// saved: each registered tensor region (whole, flat range or box) is assembled from the slices
// of any kind in all rank files (resharding); scalars
// and strings come from rank_00000.h5. When rank_<rank>.h5 stores exactly the registered slices
// (resuming with the world that saved), only it is read. Before any buffer is written it checks
// the format version, that every entry is present with the registered kind, dtype and full shape,
// that the rank files together hold every registered element, and that they hold nothing
// unregistered. Tensors are then read straight into their buffers and each stored slice's CRC-32C
// verified; scalars and strings are assigned only after every check passed. So after a
// CheckpointError the scalars are untouched but the tensors may be partly overwritten: do not
// train on, load another checkpoint (which overwrites every entry) or exit.
void load_checkpoint(const StateRegistry& registry, const std::string& checkpoint_dir, int rank = 0,
                     const LoadOptions& options = {});

// The checkpoint directory (<root>/step_...) to resume from: the one <root>/latest names when it
// is complete, otherwise the complete step_* directory with the highest step; nullopt when
// there is none (or no root). Temporary directories are never returned.
std::optional<std::string> find_latest(const std::string& root);

// A step directory that find_latest passed over, and why (the rank file and what was wrong).
struct SkippedCheckpoint {
  std::string dir;
  std::string reason;
};
// What find_latest sees, for a resume that must say what it skips: the directory it returns, the
// step_* directories newer than that one which are not complete (all of them when none is),
// newest first, and the hidden temporaries of saves that never published.
struct CheckpointSearch {
  std::optional<std::string> found;
  std::vector<SkippedCheckpoint> skipped;
  std::vector<std::string> unfinished;
};
CheckpointSearch search_checkpoints(const std::string& root);

// True when `dir` is a published checkpoint: its name is step_<N>, and for every rank r below the
// world that rank_00000.h5 names, rank_<r>.h5 opens and names step N, rank r and that world.
bool is_complete_checkpoint(const std::string& dir);
// Why `dir` is not a published checkpoint, naming the rank file at fault; nullopt when it is.
std::optional<std::string> checkpoint_problem(const std::string& dir);

// The string entry `name` (e.g. "meta/config") of a checkpoint, checksum verified, without a
// registry: for checking the stored config before building the model.
std::string read_string(const std::string& checkpoint_dir, const std::string& name, int rank = 0);

// The root attributes of a checkpoint's rank file, whatever its format version.
struct CheckpointInfo {
  int64_t format_version = 0;
  int64_t step = 0;
  int64_t rank = 0;
  int64_t world = 0;
  std::string created_utc;      // "2025-01-31T12:00:00Z"
  std::string memento_version;  // of the build that wrote it
};
CheckpointInfo read_checkpoint_info(const std::string& checkpoint_dir, int rank = 0);

// Removes all but the newest `keep` (>= 1) complete checkpoints of `root`, never the one
// <root>/latest names. Incomplete and temporary directories are left alone. With several ranks,
// call it on one rank (0) after save_checkpoint returned.
void prune_checkpoints(const std::string& root, int keep);

namespace detail {
// Test hook: called with a point's name as save_checkpoint passes it: on rank 0
// "tmp_dir_created"; on every rank "dataset_written" (each entry), "file_written", "file_synced";
// on rank 0 "dir_published", "latest_tmp_written", "latest_published". Fault-injection tests
// raise SIGKILL there. Null (the default) disables it.
using SaveHook = void (*)(const char* point);
void set_save_hook(SaveHook hook);

// Byte offset in `file` (a rank file) of the data it stores of tensor entry `name` (e.g.
// "model/model.norm.weight"; a partial slice's own data), for fault-injection tests that corrupt
// a tensor on disk.
uint64_t tensor_file_offset(const std::string& file, const std::string& name);
}  // namespace detail

}  // namespace memento::checkpoint
