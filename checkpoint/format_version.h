#pragma once

#include <string_view>

namespace memento::checkpoint {

// Bumped whenever the on-disk layout changes; a checkpoint with another version is refused.
inline constexpr int kFormatVersion = 1;
int format_version();

// Stored in every checkpoint for provenance: project(VERSION) of the top-level CMakeLists.txt.
inline constexpr std::string_view kMementoVersion = MEMENTO_VERSION;

}  // namespace memento::checkpoint
