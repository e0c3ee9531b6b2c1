// Synchronous HDF5 checkpoints of a StateRegistry: one file per rank in a step directory,
// published atomically (docs/checkpoint-format.md has the layout and the protocol).
//
//   save_checkpoint(registry, "ckpt", step);                  // ckpt/step_000000100/rank_00000.h5
//   if (auto dir = find_latest("ckpt")) load_checkpoint(registry, *dir);
//
// Every failure that is the file's or the filesystem's fault throws CheckpointError naming the
// file and the tensor or attribute at fault. HDF5 calls must come from one thread at a time.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "checkpoint/state_registry.h"

namespace memento::checkpoint {

// Writes every registered entry to <root>/step_<step>/rank_<rank>.h5 and then points
// <root>/latest at it. A crash at any moment leaves either the previous checkpoints or the new
// one complete, never a partial one that find_latest returns; a re-save of the same step
// replaces it atomically. Tensors must be in host memory. Only world = 1 (rank 0) for now.
void save_checkpoint(const StateRegistry& registry, const std::string& root, int64_t step,
                     int rank = 0);

struct LoadOptions {
  // Datasets in the file that are not registered are skipped instead of refused.
  bool allow_unregistered = false;
};

// Restores every registered entry from <checkpoint_dir>/rank_<rank>.h5, in place. Before any
// buffer is written it checks the format version, that every entry is present with the
// registered kind, dtype and shape, and that the file holds nothing unregistered. Tensors are then
// read straight into their buffers and their CRC-32C verified; scalars and strings are assigned
// only after every check passed. So after a CheckpointError the scalars are untouched but the
// tensors may be partly overwritten: do not train on, load another checkpoint (which overwrites
// every entry) or exit.
void load_checkpoint(const StateRegistry& registry, const std::string& checkpoint_dir, int rank = 0,
                     const LoadOptions& options = {});

// The checkpoint directory (<root>/step_...) to resume from: the one <root>/latest names when it
// is complete, otherwise the complete step_* directory with the highest step; nullopt when
// there is none (or no root). Temporary directories are never returned.
std::optional<std::string> find_latest(const std::string& root);

// True when `dir` is a published checkpoint: its name is step_<N>, and rank_00000.h5 opens,
// names step N, and every rank file of its world exists.
bool is_complete_checkpoint(const std::string& dir);

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
// <root>/latest names. Incomplete and temporary directories are left alone.
void prune_checkpoints(const std::string& root, int keep);

namespace detail {
// Test hook: called with a point's name ("tmp_dir_created", "dataset_written", "file_written",
// "file_synced", "dir_published", "latest_tmp_written", "latest_published") as save_checkpoint
// passes it. Fault-injection tests raise SIGKILL there. Null (the default) disables it.
using SaveHook = void (*)(const char* point);
void set_save_hook(SaveHook hook);

// Byte offset in `file` of the data of tensor entry `name` (e.g. "model/model.norm.weight"),
// for fault-injection tests that corrupt a tensor on disk.
uint64_t tensor_file_offset(const std::string& file, const std::string& name);
}  // namespace detail

}  // namespace memento::checkpoint
