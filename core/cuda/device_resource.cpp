#include "core/cuda/device_resource.h"

#include <cuda_runtime_api.h>

#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

#include "core/cuda/check.h"
#include "core/cuda/stream.h"

namespace memento::cuda {

// Why the driver's stream-ordered pool rather than our own size-class bins: with its release
// threshold at UINT64_MAX the pool never gives freed memory back at synchronisation points, so
// steady-state steps allocate without a cudaMalloc; it coalesces and splits blocks itself (no
// fragmentation from rounding to bins), stays valid under CUDA graph capture and is one call per
// allocation.
//
// Streams. allocate(bytes) and deallocate(ptr, bytes) run on the compute stream
// (cudaStreamLegacy), as they always have; the StreamView overloads on the stream given. What
// keeps a block freed on stream A from being handed to stream B while A's work on it still runs is
// the driver's pool reuse policy, not events of ours (RMM's cuda_async_memory_resource relies on
// the same). cudaFreeAsync(p, A) returns p to the pool in A's order; cudaMallocFromPoolAsync on B
// may hand it out only (1) when B already depends on the free through an event
// (cudaMemPoolReuseFollowEventDependencies), (2) when the free has completed on the GPU
// (cudaMemPoolReuseAllowOpportunistic), or (3) by making B wait for the free
// (cudaMemPoolReuseAllowInternalDependencies). All three are on by default and all are safe; (3)
// can make a side stream's allocation wait for the compute stream (a hidden serialisation): turn
// it off with cudaMemPoolSetAttribute if a feature sees that, at the price of a bigger pool. The
// caller's part (core/memory_resource.h): free on the stream that used the block last, after
// making it wait for any other stream that used it.
namespace {
cudaMemPool_t as_pool(void* p) { return static_cast<cudaMemPool_t>(p); }
}  // namespace

CachingDeviceResource::CachingDeviceResource(int device) : device_(device) {
  cudaMemPoolProps props{};
  props.allocType = cudaMemAllocationTypePinned;
  props.location.type = cudaMemLocationTypeDevice;
  props.location.id = device;
  cudaMemPool_t pool = nullptr;
  CUDA_CHECK(cudaMemPoolCreate(&pool, &props));
  uint64_t threshold = UINT64_MAX;
  CUDA_CHECK(cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &threshold));
  pool_ = pool;
}

std::string CachingDeviceResource::name() const {
  return "cuda_caching:" + std::to_string(device_);
}

void* CachingDeviceResource::allocate(size_t bytes) {
  return allocate(bytes, compute_stream_of(device_));
}

void CachingDeviceResource::deallocate(void* ptr, size_t bytes) noexcept {
  deallocate(ptr, bytes, compute_stream_of(device_));
}

void* CachingDeviceResource::allocate(size_t bytes, StreamView stream) {
  if (bytes == 0) return nullptr;
  MEMENTO_CHECK(stream.device() == device(), name(), ": allocation on a stream of ",
                device_name(stream.device()));
  DeviceGuard guard(device_);
  void* p = nullptr;
  const cudaError_t status = cudaMallocFromPoolAsync(&p, bytes, as_pool(pool_), native(stream));
  if (status == cudaErrorMemoryAllocation) {
    (void)cudaGetLastError();
    throw OutOfMemoryError(::memento::detail::concat(
        name(), ": cannot allocate ", bytes, " bytes with ", in_use_.load(), " bytes in use"));
  }
  CUDA_CHECK(status);
  const size_t now = in_use_.fetch_add(bytes) + bytes;
  size_t peak = peak_.load();
  while (now > peak && !peak_.compare_exchange_weak(peak, now)) {
  }
  return p;
}

void CachingDeviceResource::deallocate(void* ptr, size_t bytes, StreamView stream) noexcept {
  if (ptr == nullptr) return;
  MEMENTO_CHECK(stream.device() == device(), name(), ": free on a stream of ",
                device_name(stream.device()));
  int previous = 0;
  (void)cudaGetDevice(&previous);
  (void)cudaSetDevice(device_);
  CUDA_CHECK(cudaFreeAsync(ptr, native(stream)));
  (void)cudaSetDevice(previous);
  in_use_.fetch_sub(bytes);
}

void CachingDeviceResource::release_cached() {
  DeviceGuard guard(device_);
  CUDA_CHECK(cudaStreamSynchronize(cudaStreamLegacy));
  CUDA_CHECK(cudaMemPoolTrimTo(as_pool(pool_), 0));
}

void* PinnedHostResource::allocate(size_t bytes) {
  if (bytes == 0) return nullptr;
  void* p = nullptr;
  const cudaError_t status = cudaHostAlloc(&p, bytes, cudaHostAllocPortable);
  if (status == cudaErrorMemoryAllocation) {
    (void)cudaGetLastError();
    throw OutOfMemoryError(
        ::memento::detail::concat(name(), ": cannot allocate ", bytes, " bytes"));
  }
  CUDA_CHECK(status);
  return p;
}

void PinnedHostResource::deallocate(void* ptr, size_t) noexcept {
  if (ptr) CUDA_CHECK(cudaFreeHost(ptr));
}

CachingDeviceResource* caching_device_resource(int device) {
  // Never destroyed: tensors in static storage may outlive any destruction order we could pick,
  // and the driver reclaims everything at exit.
  static std::mutex mutex;
  static auto* resources = new std::vector<std::unique_ptr<CachingDeviceResource>>();
  MEMENTO_EXPECT(device >= 0 && device < cuda_device_count(), Error, "no CUDA device ", device,
                 " (", cuda_device_count(), " visible)");
  const std::lock_guard<std::mutex> lock(mutex);
  if (resources->empty()) resources->resize(static_cast<size_t>(cuda_device_count()));
  auto& slot = (*resources)[static_cast<size_t>(device)];
  if (!slot) slot = std::make_unique<CachingDeviceResource>(device);
  return slot.get();
}

PinnedHostResource* pinned_host_resource() {
  static PinnedHostResource resource;
  return &resource;
}

}  // namespace memento::cuda
