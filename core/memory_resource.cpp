#include "core/memory_resource.h"

#include <cstdlib>
#include <new>

#include "core/error.h"

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
}  // namespace

MemoryResource* default_resource(Device device) {
  switch (device.kind) {
    case DeviceKind::kCpu: return g_default_cpu;
    case DeviceKind::kMeta: return g_default_meta;
    case DeviceKind::kCuda: break;
  }
  throw Error("no memory resource for device " + device_name(device) +
              " (this build has no CUDA backend)");
}

MemoryResource* set_default_resource(Device device, MemoryResource* resource) {
  MEMENTO_CHECK(device.kind != DeviceKind::kCuda, "no CUDA backend in this build");
  MemoryResource*& slot = device.is_meta() ? g_default_meta : g_default_cpu;
  MemoryResource* previous = slot;
  slot = resource;
  return previous;
}

}  // namespace memento
