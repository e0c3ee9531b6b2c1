#include "core/memory_resource.h"

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <iterator>
#include <mutex>
#include <new>
#include <unordered_map>
#include <vector>

#include "core/error.h"
#include "core/stream.h"
#ifdef MEMENTO_WITH_CUDA
#include "core/cuda/device_resource.h"
#endif

namespace memento {

std::string device_name(Device device) {
  switch (device.kind) {
    case DeviceKind::kCpu:
      return "cpu";
    case DeviceKind::kCuda:
      return "cuda:" + std::to_string(device.index);
    case DeviceKind::kMeta:
      return "meta";
  }
  return "?";
}

void* MemoryResource::allocate(size_t bytes, StreamView) { return allocate(bytes); }

void MemoryResource::deallocate(void* ptr, size_t bytes, StreamView stream) noexcept {
  if (ptr == nullptr || stream.is_synchronous()) return deallocate(ptr, bytes);
  if (stream.device().kind == DeviceKind::kCuda) {
    // No stream-ordered free here: wait for the stream's work, which may still read or write it.
    stream.synchronize();
    return deallocate(ptr, bytes);
  }
  enqueue(stream, [this, ptr, bytes] { deallocate(ptr, bytes); });
}

namespace {

size_t round_up(size_t bytes, size_t multiple) {
  return (bytes + multiple - 1) / multiple * multiple;
}

size_t page_size() {
  static const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  return page;
}

}  // namespace

struct SystemResource::Cache {
  struct Bin {
    std::vector<void*> blocks;  // oldest first
    size_t idle = 0;  // blocks cached throughout the current trim interval (the minimum count)
    uint64_t last_use = 0;  // when a block last entered or left
  };
  std::mutex mutex;
  std::unordered_map<size_t, Bin> bins;  // page-rounded size -> freed mappings of that size
  size_t limit = SIZE_MAX;
  uint64_t clock = 0;  // counts cache pushes and pops, for last_use
  Stats stats;

  // Unmaps `n` blocks of the bin (the most recently freed last in, so the oldest go first).
  void drop(size_t bytes, Bin& bin, size_t n) noexcept {
    for (size_t i = 0; i < n; ++i) {
      munmap(bin.blocks[i], bytes);
      ++stats.unmaps;
    }
    bin.blocks.erase(bin.blocks.begin(), bin.blocks.begin() + static_cast<std::ptrdiff_t>(n));
    stats.cached -= n * bytes;
    bin.idle = std::min(bin.idle, bin.blocks.size());
  }

  // Unmaps the oldest block of the least recently used bin (the cache is not empty).
  void evict_least_recent() noexcept {
    auto victim = bins.end();
    for (auto it = bins.begin(); it != bins.end(); ++it)
      if (!it->second.blocks.empty() &&
          (victim == bins.end() || it->second.last_use < victim->second.last_use))
        victim = it;
    drop(victim->first, victim->second, 1);
  }
};

SystemResource::SystemResource() : cache_(new Cache) {}

SystemResource::~SystemResource() {
  release_cached();
  delete cache_;
}

void* SystemResource::allocate(size_t bytes) {
  if (bytes == 0) return nullptr;
  if (bytes < kMapThreshold) {
    const size_t rounded = round_up(bytes, kAlignment);
    void* p = std::aligned_alloc(kAlignment, rounded);
    MEMENTO_EXPECT(p != nullptr, OutOfMemoryError, "system: cannot allocate ", bytes, " bytes");
    std::lock_guard<std::mutex> lock(cache_->mutex);
    cache_->stats.heap_live += rounded;
    return p;
  }
  const size_t rounded = round_up(bytes, page_size());
  std::lock_guard<std::mutex> lock(cache_->mutex);
  Stats& st = cache_->stats;
  void* p = nullptr;
  if (auto it = cache_->bins.find(rounded);
      it != cache_->bins.end() && !it->second.blocks.empty()) {
    Cache::Bin& bin = it->second;
    p = bin.blocks.back();  // the most recently freed: its pages are likeliest still in cache
    bin.blocks.pop_back();
    bin.idle = std::min(bin.idle, bin.blocks.size());
    bin.last_use = ++cache_->clock;
    st.cached -= rounded;
    ++st.reuses;
  } else {
    p = mmap(nullptr, rounded, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    MEMENTO_EXPECT(p != MAP_FAILED, OutOfMemoryError, "system: cannot map ", bytes, " bytes (",
                   std::strerror(errno), "); ", st.mapped_live, " bytes mapped live");
    ++st.maps;
  }
  st.mapped_live += rounded;
  st.mapped_peak = std::max(st.mapped_peak, st.mapped_live);
  return p;
}

void SystemResource::deallocate(void* ptr, size_t bytes) noexcept {
  if (ptr == nullptr) return;
  if (bytes < kMapThreshold) {
    std::free(ptr);
    std::lock_guard<std::mutex> lock(cache_->mutex);
    cache_->stats.heap_live -= round_up(bytes, kAlignment);
    return;
  }
  const size_t rounded = round_up(bytes, page_size());
  std::lock_guard<std::mutex> lock(cache_->mutex);
  Stats& st = cache_->stats;
  st.mapped_live -= rounded;
  // Never more cached than the most ever live (a step's working set, not the run's history):
  // the least recently used blocks make room.
  const size_t bound = std::min(cache_->limit, st.mapped_peak);
  if (rounded > bound) {
    munmap(ptr, rounded);
    ++st.unmaps;
    return;
  }
  while (st.cached + rounded > bound) cache_->evict_least_recent();
  Cache::Bin& bin = cache_->bins[rounded];
  bin.blocks.push_back(ptr);
  bin.last_use = ++cache_->clock;
  st.cached += rounded;
}

SystemResource::Stats SystemResource::stats() const {
  std::lock_guard<std::mutex> lock(cache_->mutex);
  return cache_->stats;
}

void SystemResource::set_cache_limit(size_t bytes) {
  std::lock_guard<std::mutex> lock(cache_->mutex);
  cache_->limit = bytes;
  while (cache_->stats.cached > bytes) cache_->evict_least_recent();
}

void SystemResource::trim() noexcept {
  std::lock_guard<std::mutex> lock(cache_->mutex);
  for (auto it = cache_->bins.begin(); it != cache_->bins.end();) {
    Cache::Bin& bin = it->second;
    cache_->drop(it->first, bin, bin.idle);
    bin.idle = bin.blocks.size();  // the next interval starts with every block idle
    it = bin.blocks.empty() ? cache_->bins.erase(it) : std::next(it);
  }
}

void SystemResource::release_cached() noexcept {
  std::lock_guard<std::mutex> lock(cache_->mutex);
  for (auto& [size, bin] : cache_->bins) cache_->drop(size, bin, bin.blocks.size());
  cache_->bins.clear();
}

SystemResource& system_resource() {
  static SystemResource& system = *new SystemResource;  // immortal: see the header
  return system;
}

ScratchBuffer::ScratchBuffer(size_t slice_bytes, int count, MemoryResource* resource)
    : resource_(resource),
      stride_(round_up(slice_bytes, MemoryResource::kAlignment)),
      bytes_(stride_ * static_cast<size_t>(std::max(count, 0))),
      data_(static_cast<char*>(resource->allocate(bytes_))) {
  if (data_ != nullptr) std::memset(data_, 0, bytes_);
}

namespace {
MetaResource g_meta;
MemoryResource* g_default_cpu = nullptr;  // null: system_resource()
MemoryResource* g_default_meta = &g_meta;
#ifdef MEMENTO_WITH_CUDA
// Per-GPU overrides; null means the GPU's caching resource.
constexpr int kMaxCudaDevices = 16;
MemoryResource* g_default_cuda[kMaxCudaDevices] = {};
#endif
}  // namespace

MemoryResource* default_resource(Device device) {
  switch (device.kind) {
    case DeviceKind::kCpu:
      return g_default_cpu != nullptr ? g_default_cpu : &system_resource();
    case DeviceKind::kMeta:
      return g_default_meta;
    case DeviceKind::kCuda:
      break;
  }
#ifdef MEMENTO_WITH_CUDA
  MEMENTO_EXPECT(device.index >= 0 && device.index < kMaxCudaDevices, Error,
                 "no memory resource for device ", device_name(device));
  if (MemoryResource* r = g_default_cuda[device.index]) return r;
  return cuda::caching_device_resource(device.index);
#else
  throw Error("no memory resource for device " + device_name(device) +
              " (this build has no CUDA backend)");
#endif
}

MemoryResource* set_default_resource(Device device, MemoryResource* resource) {
#ifdef MEMENTO_WITH_CUDA
  if (device.kind == DeviceKind::kCuda) {
    MEMENTO_CHECK(device.index >= 0 && device.index < kMaxCudaDevices, "bad CUDA device ",
                  device.index);
    MemoryResource* previous = g_default_cuda[device.index];
    g_default_cuda[device.index] = resource;
    // Restoring the caching default hands back null, which restores it again.
    return previous;
  }
#else
  MEMENTO_CHECK(device.kind != DeviceKind::kCuda, "no CUDA backend in this build");
#endif
  MemoryResource*& slot = device.is_meta() ? g_default_meta : g_default_cpu;
  MemoryResource* previous = device.is_meta() ? slot : default_resource(device);
  slot = resource;
  return previous;
}

}  // namespace memento
