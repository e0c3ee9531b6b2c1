// Where tensor bytes come from (ARCHITECTURE contract 4). Tensors never call new[] or cudaMalloc
// for their data: they ask a MemoryResource. memory/ provides tracking, limiting and pooling
// resources that wrap these; tests cap them to prove a budget on the CPU.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace memento {

class StreamView;  // core/stream.h

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
  // Stream-ordered (core/stream.h): the bytes are for work queued on `stream` from now on. The
  // default allocates now (allocate(bytes)), which is right for every stream.
  virtual void* allocate(size_t bytes, StreamView stream);
  // Frees in `stream`'s order: the block is not handed out again before the work queued on
  // `stream` so far has finished. Work on other streams that used it must be ordered before this
  // call by the caller (stream.wait(event)). The default, for memory without a stream-ordered
  // free: at once on a synchronous stream; as the next work of a CPU Stream (on its worker, so
  // the resource must be thread-safe); after synchronising a GPU stream.
  virtual void deallocate(void* ptr, size_t bytes, StreamView stream) noexcept;
  virtual Device device() const = 0;
  virtual std::string name() const = 0;

  static constexpr size_t kAlignment = 64;
};

// Aligned host memory from the operating system. A block of at least kMapThreshold bytes is a
// mapping of its own (mmap): freed, it goes back to the kernel instead of staying in malloc's heap
// (where a run's changing tensor sizes fragmented it: 480 MiB resident for 84 MiB of tensors).
// Freed mappings are kept for reuse by page-rounded size (a step asks for the same sizes each
// time, so the steady state maps nothing), never more cached bytes than the most live ones.
// Smaller blocks come from malloc. Thread-safe.
class SystemResource final : public MemoryResource {
 public:
  static constexpr size_t kMapThreshold = size_t{64} << 10;

  struct Stats {
    size_t heap_live = 0;    // bytes given out from malloc (blocks below the threshold)
    size_t mapped_live = 0;  // bytes given out in mappings (page-rounded)
    size_t mapped_peak = 0;  // the most mapped_live has been
    size_t cached = 0;       // freed mappings kept for reuse (resident, not live)
    uint64_t maps = 0;       // mmap calls
    uint64_t unmaps = 0;     // munmap calls
    uint64_t reuses = 0;     // allocations served from the cache
  };

  SystemResource();
  ~SystemResource() override;  // unmaps the cached blocks; live ones must be freed first
  SystemResource(const SystemResource&) = delete;
  SystemResource& operator=(const SystemResource&) = delete;

  using MemoryResource::allocate;  // and the stream-ordered overloads
  using MemoryResource::deallocate;
  void* allocate(size_t bytes) override;
  void deallocate(void* ptr, size_t bytes) noexcept override;
  Device device() const override { return Device::cpu(); }
  std::string name() const override { return "system"; }

  Stats stats() const;
  // Caps the cached bytes (below the live peak, which always caps them); 0 caches nothing.
  void set_cache_limit(size_t bytes);
  // Unmaps the cached blocks no allocation needed since the previous trim(): called at step
  // boundaries it drops one-off sizes (start-up, checkpoints) and keeps the step's working set.
  void trim() noexcept;
  void release_cached() noexcept;  // unmaps every cached block

 private:
  struct Cache;  // the free lists by size, behind a mutex (memory_resource.cpp)
  Cache* cache_;
};

// The process-wide SystemResource, the CPU default unless one is installed. Never destroyed, so
// tensors freed by static destructors still find it.
SystemResource& system_resource();

// Scratch bytes from a resource for one scope, as `count` zeroed slices of `slice_bytes` (an op's
// per-thread tiles, slice i for thread i), each aligned to kAlignment. The resource counts them,
// so a tracked step peak includes them; on kMeta (the dry run) they are counted and null.
class ScratchBuffer {
 public:
  ScratchBuffer(size_t slice_bytes, int count, MemoryResource* resource);
  ~ScratchBuffer() { resource_->deallocate(data_, bytes_); }
  ScratchBuffer(const ScratchBuffer&) = delete;
  ScratchBuffer& operator=(const ScratchBuffer&) = delete;

  template <typename T>
  T* slice(int i) const {
    return data_ == nullptr ? nullptr
                            : reinterpret_cast<T*>(data_ + static_cast<size_t>(i) * stride_);
  }
  size_t bytes() const { return bytes_; }

 private:
  MemoryResource* resource_;
  size_t stride_;
  size_t bytes_;
  char* data_;
};

// Hands out nothing: every pointer is null. Backs kMeta tensors.
class MetaResource final : public MemoryResource {
 public:
  using MemoryResource::allocate;
  using MemoryResource::deallocate;
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
