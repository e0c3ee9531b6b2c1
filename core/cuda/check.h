// CUDA errors and handles: CUDA_CHECK in the CHECK family, and move-only RAII owners for streams
// and events, plus a guard that sets the current device for a scope. Only built with
// MEMENTO_WITH_CUDA.
#pragma once

#include <cuda_runtime_api.h>

#include <utility>

#include "core/error.h"

namespace memento::cuda {

namespace detail {
// Prints rank, host, file, line, the expression and cudaGetErrorString(status); aborts the job.
[[noreturn]] void fatal_cuda(const char* file, int line, const char* expr, cudaError_t status);
}  // namespace detail

// True when the CUDA runtime sees at least one device. Never throws or aborts: no driver, no
// device or a broken installation all read as false (the answer is computed once).
bool cuda_available();
// Number of visible devices, 0 when cuda_available() is false.
int cuda_device_count();

// RAII stream on the current device, created non-blocking: it does not synchronise with the
// legacy default stream (the compute stream), so its work overlaps compute; order it with events.
// Move-only. Code outside core/cuda/ uses memento::Stream (core/stream.h), which works on both
// backends.
class CudaStream {
 public:
  CudaStream();
  ~CudaStream();
  CudaStream(CudaStream&& other) noexcept : stream_(std::exchange(other.stream_, nullptr)) {}
  CudaStream& operator=(CudaStream&& other) noexcept;
  CudaStream(const CudaStream&) = delete;
  CudaStream& operator=(const CudaStream&) = delete;

  cudaStream_t get() const { return stream_; }
  void synchronize() const;

 private:
  cudaStream_t stream_ = nullptr;
};

// RAII event for ordering and timing. Move-only.
class CudaEvent {
 public:
  CudaEvent();
  ~CudaEvent();
  CudaEvent(CudaEvent&& other) noexcept : event_(std::exchange(other.event_, nullptr)) {}
  CudaEvent& operator=(CudaEvent&& other) noexcept;
  CudaEvent(const CudaEvent&) = delete;
  CudaEvent& operator=(const CudaEvent&) = delete;

  cudaEvent_t get() const { return event_; }
  void record(cudaStream_t stream = nullptr) const;
  void synchronize() const;
  // Milliseconds from `start` to this event; both recorded, this one completed (synchronize()).
  float elapsed_ms_since(const CudaEvent& start) const;

 private:
  cudaEvent_t event_ = nullptr;
};

// Makes `device` current for the scope and restores the previous device after.
class DeviceGuard {
 public:
  explicit DeviceGuard(int device);
  ~DeviceGuard();
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  int previous_ = 0;
};

}  // namespace memento::cuda

// Fatal when the CUDA call does not return cudaSuccess. Evaluates expr once.
#define CUDA_CHECK(expr)                                                                    \
  do {                                                                                      \
    const cudaError_t memento_cuda_status_ = (expr);                                        \
    if (memento_cuda_status_ != cudaSuccess)                                                \
      ::memento::cuda::detail::fatal_cuda(__FILE__, __LINE__, #expr, memento_cuda_status_); \
  } while (0)

// After a kernel launch: a bad configuration is reported here, at the launch site.
#define CUDA_CHECK_LAUNCH() CUDA_CHECK(cudaGetLastError())
