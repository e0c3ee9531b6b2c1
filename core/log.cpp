#include "core/log.h"

#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <ctime>
#include <mutex>

namespace memento {
namespace {
int g_rank = 0;
int g_world = 1;
LogLevel g_level = LogLevel::kInfo;
std::mutex g_mutex;

std::string timestamp() {
  const std::time_t now = std::chrono::system_clock::to_time_t(std::chrono::system_clock::now());
  std::tm tm{};
  localtime_r(&now, &tm);
  char buf[16];
  std::strftime(buf, sizeof(buf), "%H:%M:%S", &tm);
  return buf;
}
}  // namespace

void set_log_rank(int rank, int world) {
  g_rank = rank;
  g_world = world;
}
void set_log_level(LogLevel level) { g_level = level; }
int log_rank() { return g_rank; }

void log_message(LogLevel level, const std::string& message) {
  if (level < g_level) return;
  if (level <= LogLevel::kInfo && g_rank != 0) return;
  const char* tag = level == LogLevel::kWarn ? "WARN " : level == LogLevel::kError ? "ERROR " : "";
  std::lock_guard<std::mutex> lock(g_mutex);
  FILE* out = level >= LogLevel::kWarn ? stderr : stdout;
  std::fprintf(out, "[%s %d/%d] %s%s\n", timestamp().c_str(), g_rank, g_world, tag,
               message.c_str());
  std::fflush(out);
}

namespace detail {
[[noreturn]] void fatal(const char* file, int line, const std::string& message) {
  char host[256] = "?";
  gethostname(host, sizeof(host) - 1);
  std::fprintf(stderr, "[rank %d/%d on %s] FATAL %s:%d: %s\n", g_rank, g_world, host, file, line,
               message.c_str());
  std::fflush(stderr);
  std::abort();
}
}  // namespace detail

}  // namespace memento
