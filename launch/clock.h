// The trainer's clock: steady time and the seconds elapsed since a point of it.
#pragma once

#include <chrono>

namespace memento {

using Clock = std::chrono::steady_clock;

inline double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

}  // namespace memento
