#include "checkpoint/format_version.h"

namespace memento::checkpoint {
int format_version() { return kFormatVersion; }
}  // namespace memento::checkpoint
