// The GPU side of core/stream.h: non-blocking CUDA streams, CUDA events and cudaMemcpyAsync on
// raw handles, called by core/stream.cpp when a stream or event is on a GPU. Only built with
// MEMENTO_WITH_CUDA.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <functional>

#include "core/stream.h"

namespace memento::cuda {

// The cudaStream_t of a GPU StreamView (checked: a CPU stream is a bug here).
cudaStream_t native(StreamView stream);
// The stream the ops of GPU `device` compute on (core/stream.h compute_stream): the legacy one.
inline StreamView compute_stream_of(int device) {
  return {Device{DeviceKind::kCuda, device}, static_cast<void*>(cudaStreamLegacy)};
}

// A stream on `device` created with cudaStreamNonBlocking: it never synchronises with the legacy
// default stream, so its copies overlap the compute stream's kernels.
cudaStream_t create_nonblocking_stream(int device);
void destroy_stream(cudaStream_t stream) noexcept;
void synchronize_stream(cudaStream_t stream);
// Runs `work` in the stream's order on a CUDA runtime thread (cudaLaunchHostFunc).
void launch_host_work(cudaStream_t stream, std::function<void()> work);

// An event on `device` with timing (cudaEventCreate's default flags).
cudaEvent_t create_event(int device);
void destroy_event(cudaEvent_t event) noexcept;
void record_event(cudaEvent_t event, cudaStream_t stream);
void stream_wait_event(cudaStream_t stream, cudaEvent_t event);
bool query_event(cudaEvent_t event);  // cudaErrorNotReady reads as false; other errors abort
void synchronize_event(cudaEvent_t event);
float elapsed_ms(cudaEvent_t start, cudaEvent_t end);  // both completed, on one device

// cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDefault, stream) with the stream's device current.
void copy_bytes_async(void* dst, const void* src, size_t bytes, StreamView stream);

}  // namespace memento::cuda
