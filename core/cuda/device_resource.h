// CUDA memory resources (ARCHITECTURE contract 4): device memory from a caching pool and
// page-locked host memory for fast, asynchronous copies. Only built with MEMENTO_WITH_CUDA.
#pragma once

#include <atomic>
#include <cstddef>

#include "core/memory_resource.h"

namespace memento::cuda {

// Device memory on one GPU from a cudaMallocAsync pool that keeps freed memory cached, ordered on
// streams: allocate(bytes)/deallocate(ptr, bytes) on the compute stream (the legacy default
// stream), the StreamView overloads on the stream given (a GPU stream of this device). A block
// freed on one stream goes to another only when that is safe (the driver's reuse rules: the .cpp).
class CachingDeviceResource final : public MemoryResource {
 public:
  explicit CachingDeviceResource(int device);
  void* allocate(size_t bytes) override;  // throws OutOfMemoryError when the GPU is full
  void deallocate(void* ptr, size_t bytes) noexcept override;
  void* allocate(size_t bytes, StreamView stream) override;
  void deallocate(void* ptr, size_t bytes, StreamView stream) noexcept override;
  Device device() const override { return {DeviceKind::kCuda, device_}; }
  std::string name() const override;
  size_t bytes_in_use() const { return in_use_.load(); }
  size_t peak_bytes() const { return peak_.load(); }
  // Returns cached, unused memory to the driver (the pool otherwise keeps it).
  void release_cached();

 private:
  int device_;
  void* pool_ = nullptr;  // cudaMemPool_t
  std::atomic<size_t> in_use_{0};
  std::atomic<size_t> peak_{0};
};

// Page-locked host memory (cudaHostAlloc). Its tensors are CPU tensors whose copies to and from
// the GPU can run asynchronously at full bandwidth.
class PinnedHostResource final : public MemoryResource {
 public:
  using MemoryResource::allocate;  // stream overloads: the defaults (cudaFreeHost synchronises)
  using MemoryResource::deallocate;
  void* allocate(size_t bytes) override;
  void deallocate(void* ptr, size_t bytes) noexcept override;
  Device device() const override { return Device::cpu(); }
  std::string name() const override { return "cuda_pinned_host"; }
};

// The process-wide caching resource for GPU `device` (created on first use). Throws Error when
// the build sees no such device.
CachingDeviceResource* caching_device_resource(int device);
PinnedHostResource* pinned_host_resource();

}  // namespace memento::cuda
