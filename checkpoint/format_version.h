#pragma once

#include <string_view>

namespace memento::checkpoint {

// Bumped whenever the on-disk layout changes; a checkpoint with another version is refused.
inline constexpr int kFormatVersion = 1;
int format_version();

// Stored in every checkpoint for provenance. Keep in step with project(VERSION) in CMakeLists.txt.
inline constexpr std::string_view kMementoVersion = "0.1.0";

}  // namespace memento::checkpoint
