#include "core/host_memory.h"

#include <malloc.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>

#include "core/memory_resource.h"

namespace memento {
namespace {

std::mutex g_baseline_mutex;
bool g_have_baseline = false;
size_t g_baseline_libraries = 0;

// True when the user chose this malloc parameter in the environment.
bool user_set(const char* env, const char* tunable) {
  if (std::getenv(env) != nullptr) return true;
  const char* tunables = std::getenv("GLIBC_TUNABLES");
  return tunables != nullptr && std::strstr(tunables, tunable) != nullptr;
}

size_t heap_free_bytes() {
#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 33))
  return mallinfo2().fordblks;
#else
  return 0;
#endif
}

std::string mib(size_t bytes) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.1f MiB", static_cast<double>(bytes) / (1 << 20));
  return buf;
}

}  // namespace

ProcessMemory read_process_memory() {
  ProcessMemory m;
  std::FILE* f = std::fopen("/proc/self/status", "r");
  if (f == nullptr) return m;
  char line[256];
  // Lines read "VmRSS:      123456 kB".
  const struct {
    const char* key;
    size_t* field;
  } fields[] = {{"VmRSS:", &m.resident},
                {"RssAnon:", &m.anonymous},
                {"RssFile:", &m.file},
                {"RssShmem:", &m.shared},
                {"VmHWM:", &m.peak_resident}};
  while (std::fgets(line, sizeof(line), f) != nullptr) {
    for (const auto& [key, field] : fields) {
      const size_t n = std::strlen(key);
      if (std::strncmp(line, key, n) != 0) continue;
      unsigned long long kib = 0;
      if (std::sscanf(line + n, "%llu", &kib) == 1) *field = static_cast<size_t>(kib) * 1024;
    }
  }
  std::fclose(f);
  return m;
}

void configure_host_allocator() {
  if (!user_set("MALLOC_ARENA_MAX", "glibc.malloc.arena_max")) mallopt(M_ARENA_MAX, 2);
  // Setting either threshold also turns glibc's dynamic threshold off.
  if (!user_set("MALLOC_MMAP_THRESHOLD_", "glibc.malloc.mmap_threshold"))
    mallopt(M_MMAP_THRESHOLD, static_cast<int>(kHostMmapThreshold));
  if (!user_set("MALLOC_TRIM_THRESHOLD_", "glibc.malloc.trim_threshold"))
    mallopt(M_TRIM_THRESHOLD, static_cast<int>(kHostTrimThreshold));
}

void trim_host_memory() { system_resource().trim(); }

void release_host_memory() {
  system_resource().release_cached();
  malloc_trim(0);
}

ProcessMemory record_library_baseline() {
  const ProcessMemory now = read_process_memory();
  const SystemResource::Stats s = system_resource().stats();
  const size_t held = s.heap_live + s.mapped_live + s.cached + heap_free_bytes();
  std::lock_guard<std::mutex> lock(g_baseline_mutex);
  g_have_baseline = true;
  g_baseline_libraries = now.anonymous > held ? now.anonymous - held : 0;
  return now;
}

HostMemoryAccount account_host_memory() {
  HostMemoryAccount a;
  a.process = read_process_memory();
  const SystemResource::Stats s = system_resource().stats();
  a.tensors = s.heap_live + s.mapped_live;
  a.cached = s.cached;
  a.heap_free = heap_free_bytes();
  {
    std::lock_guard<std::mutex> lock(g_baseline_mutex);
    a.libraries = g_have_baseline ? g_baseline_libraries : 0;
  }
  a.unaccounted = static_cast<long long>(a.process.anonymous) -
                  static_cast<long long>(a.tensors + a.cached + a.heap_free + a.libraries);
  return a;
}

std::string format_host_memory(const HostMemoryAccount& a) {
  const long long other = a.unaccounted;
  return "resident " + mib(a.process.resident) + ": anonymous " + mib(a.process.anonymous) +
         " = tensors " + mib(a.tensors) + " + cached " + mib(a.cached) + " + free heap " +
         mib(a.heap_free) + " + libraries " + mib(a.libraries) + (other < 0 ? " - " : " + ") +
         "other " + mib(static_cast<size_t>(other < 0 ? -other : other)) + "; files " +
         mib(a.process.file) + " (code, mapped data)";
}

}  // namespace memento
