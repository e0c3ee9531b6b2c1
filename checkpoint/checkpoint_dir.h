// The on-disk layout of a checkpoint root and the crash-safe steps that publish into it:
//
//   <root>/step_000000100/rank_00000.h5       a published checkpoint (complete by construction)
//   <root>/.step_000000100.tmp.<pid>/          being written; never read, never loaded
//   <root>/latest                               "step_000000100\n", replaced atomically
//
// Every function throws CheckpointError naming the path and the system's reason on failure.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace memento::checkpoint {

inline constexpr std::string_view kLatestFileName = "latest";

std::string step_dir_name(int64_t step);  // "step_000000100"
std::string rank_file_name(int rank);     // "rank_00000.h5"
// The step of "step_<digits>", or nullopt for any other name (tmp directories included).
std::optional<int64_t> parse_step_dir_name(std::string_view name);
// "<dir>/<name>" without doubling the separator.
std::string join_path(const std::string& dir, std::string_view name);

// fsync of a file's data and metadata, and of a directory's entries.
void fsync_file(const std::string& path);
void fsync_dir(const std::string& path);

// Moves the finished directory `tmp` to `final_dir` (same parent). When `final_dir` exists it is
// swapped in one atomic rename (RENAME_EXCHANGE) and the old copy removed, so a reader sees the
// old or the new directory, never none or a mix. Then fsyncs the parent.
void publish_directory(const std::string& tmp, const std::string& final_dir);

// Replaces `path` with `contents` via write-to-temp, fsync, rename, fsync of the directory.
// `before_rename` (may be null) runs after the temp file is durable; tests use it to crash there.
void write_file_atomic(const std::string& path, std::string_view contents,
                       void (*before_rename)() = nullptr);

// The directory name held by <root>/latest when it is a well-formed step directory name,
// otherwise nullopt (missing, empty, garbage, or a path).
std::optional<std::string> read_latest_pointer(const std::string& root);

// Removes a directory tree so that a crash midway never leaves a partial step_* directory behind:
// it is first renamed to a hidden name, then deleted.
void remove_directory_safely(const std::string& dir);

// Removes the hidden temporaries that an interrupted save, publish or removal leaves in `root`
// (.step_*.tmp directories, .latest.tmp.<pid> files, .step_*.deleting.<pid> and .old.<pid>
// copies); returns their paths. Only the one process that saves into `root` may call it.
std::vector<std::string> remove_stale_temporaries(const std::string& root);

}  // namespace memento::checkpoint
