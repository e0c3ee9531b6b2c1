#include "core/memory_resource.h"

#include <cstdlib>
#include <new>

#include "core/error.h"
#ifdef MEMENTO_WITH_CUDA
#include "core/cuda/device_resource.h"
#endif

namespace memento {

std::string device_name(Device device) {
  switch (device.kind) {
    case DeviceKind::kCpu: return "cpu";
    case DeviceKind::kCuda: return "cuda:" + std::to_string(device.index);
    case DeviceKind::kMeta: return "meta";
  }
  return "?";
}

void* SystemResource::allocate(size_t bytes) {
  if (bytes == 0) return nullptr;
  const size_t rounded = (bytes + kAlignment - 1) / kAlignment * kAlignment;
  void* p = std::aligned_alloc(kAlignment, rounded);
  MEMENTO_EXPECT(p != nullptr, OutOfMemoryError, "system: cannot allocate ", bytes, " bytes");
  return p;
}

void SystemResource::deallocate(void* ptr, size_t) noexcept { std::free(ptr); }

namespace {
SystemResource g_system;
MetaResource g_meta;
MemoryResource* g_default_cpu = &g_system;
MemoryResource* g_default_meta = &g_meta;
#ifdef MEMENTO_WITH_CUDA
// Per-GPU overrides; null means the GPU's caching resource.
constexpr int kMaxCudaDevices = 16;
MemoryResource* g_default_cuda[kMaxCudaDevices] = {};
#endif
}  // namespace

MemoryResource* default_resource(Device device) {
  switch (device.kind) {
    case DeviceKind::kCpu: return g_default_cpu;
    case DeviceKind::kMeta: return g_default_meta;
    case DeviceKind::kCuda: break;
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
  MemoryResource* previous = slot;
  slot = resource;
  return previous;
}

}  // namespace memento
