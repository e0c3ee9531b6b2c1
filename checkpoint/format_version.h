#pragma once

namespace memento::checkpoint {

// Bumped whenever the on-disk layout changes; a checkpoint with another version is refused.
inline constexpr int kFormatVersion = 1;
int format_version();

}  // namespace memento::checkpoint
