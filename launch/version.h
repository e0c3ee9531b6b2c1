// What build this is: `trainer --version`, and the first lines of every run's log.
#pragma once

#include <string>

namespace memento {

// "memento 0.1.0 (commit 1a2b3c4d5e6f)"; "-dirty" follows a commit with uncommitted changes.
std::string version_string();
// The version, the commit, the host name and the process id, for a run's first log line.
std::string build_and_host_line();

}  // namespace memento
