#include "memory/resources.h"

#include <cstdio>

#include "core/error.h"

namespace memento {

void* TrackingResource::allocate(size_t bytes) {
  void* p = upstream_->allocate(bytes);
  const size_t now = current_.fetch_add(bytes) + bytes;
  size_t peak = peak_.load();
  while (now > peak && !peak_.compare_exchange_weak(peak, now)) {
  }
  return p;
}

void TrackingResource::deallocate(void* ptr, size_t bytes) noexcept {
  upstream_->deallocate(ptr, bytes);
  current_.fetch_sub(bytes);
}

void* LimitResource::allocate(size_t bytes) {
  const size_t before = current_.fetch_add(bytes);
  if (before + bytes > budget_) {
    current_.fetch_sub(bytes);
    throw OutOfMemoryError(detail::concat(what_, " exceeded: ", format_bytes(bytes),
                                          " requested with ", format_bytes(before),
                                          " live; budget ", format_bytes(budget_)));
  }
  try {
    return upstream_->allocate(bytes);
  } catch (...) {
    current_.fetch_sub(bytes);
    throw;
  }
}

void LimitResource::deallocate(void* ptr, size_t bytes) noexcept {
  upstream_->deallocate(ptr, bytes);
  current_.fetch_sub(bytes);
}

std::string format_bytes(double bytes) {
  static constexpr const char* kUnits[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int unit = 0;
  while (bytes >= 1024.0 && unit < 4) {
    bytes /= 1024.0;
    ++unit;
  }
  char buf[32];
  if (unit == 0) {
    std::snprintf(buf, sizeof(buf), "%.0f B", bytes);
  } else {
    std::snprintf(buf, sizeof(buf), "%.2f %s", bytes, kUnits[unit]);
  }
  return buf;
}

}  // namespace memento
