// Rank-aware logging: "[HH:MM:SS rank/world] message". INFO prints on rank 0 only; WARN and ERROR
// print on every rank.
#pragma once

#include <string>

#include "core/error.h"

namespace memento {

enum class LogLevel { kDebug, kInfo, kWarn, kError };

// Set once by the launcher after bootstrap; defaults to rank 0 of 1.
void set_log_rank(int rank, int world);
void set_log_level(LogLevel level);
int log_rank();
void log_message(LogLevel level, const std::string& message);

}  // namespace memento

#define MEMENTO_LOG_INFO(...) \
  ::memento::log_message(::memento::LogLevel::kInfo, ::memento::detail::concat(__VA_ARGS__))
#define MEMENTO_LOG_WARN(...) \
  ::memento::log_message(::memento::LogLevel::kWarn, ::memento::detail::concat(__VA_ARGS__))
#define MEMENTO_LOG_ERROR(...) \
  ::memento::log_message(::memento::LogLevel::kError, ::memento::detail::concat(__VA_ARGS__))
#define MEMENTO_LOG_DEBUG(...) \
  ::memento::log_message(::memento::LogLevel::kDebug, ::memento::detail::concat(__VA_ARGS__))
