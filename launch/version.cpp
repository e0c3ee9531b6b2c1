#include "launch/version.h"

#include <unistd.h>

#include "core/error.h"
#include "memento/build_info.h"

namespace memento {

std::string version_string() {
  return detail::concat("memento ", MEMENTO_BUILD_VERSION, " (commit ", MEMENTO_BUILD_COMMIT, ")");
}

std::string build_and_host_line() {
  char host[256] = "unknown";
  if (gethostname(host, sizeof(host)) != 0) host[0] = '\0';
  host[sizeof(host) - 1] = '\0';
  return detail::concat(version_string(), " on host ", host, ", pid ", getpid());
}

}  // namespace memento
