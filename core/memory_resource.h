// Where tensor bytes come from (ARCHITECTURE contract 4). Tensors never call new[] or cudaMalloc
// for their data: they ask a MemoryResource. memory/ provides tracking, limiting and pooling
// resources that wrap these; tests cap them to prove a budget on the CPU.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace memento {

enum class DeviceKind : uint8_t { kCpu, kCuda, kMeta };

// Where a tensor lives. kMeta tensors have shapes but no bytes: the dry run executes the model on
// them to list every activation without allocating anything.
struct Device {
  DeviceKind kind = DeviceKind::kCpu;
  int index = 0;

  static Device cpu() { return {DeviceKind::kCpu, 0}; }
  static Device meta() { return {DeviceKind::kMeta, 0}; }
  bool is_cpu() const { return kind == DeviceKind::kCpu; }
  bool is_meta() const { return kind == DeviceKind::kMeta; }
  friend bool operator==(const Device&, const Device&) = default;
};
std::string device_name(Device device);

class MemoryResource {
 public:
  virtual ~MemoryResource() = default;
  // Returns at least `bytes` bytes aligned to kAlignment, or throws OutOfMemoryError.
  virtual void* allocate(size_t bytes) = 0;
  virtual void deallocate(void* ptr, size_t bytes) noexcept = 0;
  virtual Device device() const = 0;
  virtual std::string name() const = 0;

  static constexpr size_t kAlignment = 64;
};

// Aligned host memory from the operating system.
class SystemResource final : public MemoryResource {
 public:
  void* allocate(size_t bytes) override;
  void deallocate(void* ptr, size_t bytes) noexcept override;
  Device device() const override { return Device::cpu(); }
  std::string name() const override { return "system"; }
};

// Hands out nothing: every pointer is null. Backs kMeta tensors.
class MetaResource final : public MemoryResource {
 public:
  void* allocate(size_t) override { return nullptr; }
  void deallocate(void*, size_t) noexcept override {}
  Device device() const override { return Device::meta(); }
  std::string name() const override { return "meta"; }
};

// The resource new tensors on `device` use unless given one. set_default_resource returns the
// previous one so that scopes can restore it; the caller keeps ownership.
MemoryResource* default_resource(Device device);
MemoryResource* set_default_resource(Device device, MemoryResource* resource);

// Installs a resource as the default for its device for the lifetime of the scope.
class ScopedDefaultResource {
 public:
  explicit ScopedDefaultResource(MemoryResource* resource)
      : device_(resource->device()), previous_(set_default_resource(device_, resource)) {}
  ~ScopedDefaultResource() { set_default_resource(device_, previous_); }
  ScopedDefaultResource(const ScopedDefaultResource&) = delete;
  ScopedDefaultResource& operator=(const ScopedDefaultResource&) = delete;

 private:
  Device device_;
  MemoryResource* previous_;
};

}  // namespace memento
