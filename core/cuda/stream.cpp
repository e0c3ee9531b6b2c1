#include "core/cuda/stream.h"

#include <cstdio>
#include <exception>
#include <memory>
#include <utility>

#include "core/cuda/check.h"

namespace memento::cuda {

cudaStream_t native(StreamView stream) {
  MEMENTO_CHECK(stream.device().kind == DeviceKind::kCuda, "a GPU stream is needed, got one on ",
                device_name(stream.device()));
  return static_cast<cudaStream_t>(stream.handle());
}

cudaStream_t create_nonblocking_stream(int device) {
  const DeviceGuard guard(device);
  cudaStream_t stream = nullptr;
  CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  return stream;
}

void destroy_stream(cudaStream_t stream) noexcept {
  if (stream != nullptr) (void)cudaStreamDestroy(stream);
}

void synchronize_stream(cudaStream_t stream) { CUDA_CHECK(cudaStreamSynchronize(stream)); }

namespace {
// cudaLaunchHostFunc's callback: runs the work it was given and frees it. An exception cannot
// travel back to the stream's owner from a runtime thread: it ends the job, as CUDA errors do.
void CUDART_CB run_host_work(void* data) {
  const std::unique_ptr<std::function<void()>> work(static_cast<std::function<void()>*>(data));
  try {
    (*work)();
  } catch (const std::exception& e) {
    ::memento::detail::fatal(
        __FILE__, __LINE__,
        ::memento::detail::concat("host work on a GPU stream threw: ", e.what()));
  }
}
}  // namespace

void launch_host_work(cudaStream_t stream, std::function<void()> work) {
  auto* data = new std::function<void()>(std::move(work));
  const cudaError_t status = cudaLaunchHostFunc(stream, run_host_work, data);
  if (status != cudaSuccess) delete data;
  CUDA_CHECK(status);
}

cudaEvent_t create_event(int device) {
  const DeviceGuard guard(device);
  cudaEvent_t event = nullptr;
  CUDA_CHECK(cudaEventCreate(&event));
  return event;
}

void destroy_event(cudaEvent_t event) noexcept {
  if (event != nullptr) (void)cudaEventDestroy(event);
}

void record_event(cudaEvent_t event, cudaStream_t stream) {
  CUDA_CHECK(cudaEventRecord(event, stream));
}

void stream_wait_event(cudaStream_t stream, cudaEvent_t event) {
  CUDA_CHECK(cudaStreamWaitEvent(stream, event, 0));
}

bool query_event(cudaEvent_t event) {
  const cudaError_t status = cudaEventQuery(event);
  if (status == cudaErrorNotReady) {
    (void)cudaGetLastError();  // not sticky, but do not leave it for the next CUDA_CHECK_LAUNCH
    return false;
  }
  CUDA_CHECK(status);
  return true;
}

void synchronize_event(cudaEvent_t event) { CUDA_CHECK(cudaEventSynchronize(event)); }

float elapsed_ms(cudaEvent_t start, cudaEvent_t end) {
  float ms = 0;
  CUDA_CHECK(cudaEventElapsedTime(&ms, start, end));
  return ms;
}

void copy_bytes_async(void* dst, const void* src, size_t bytes, StreamView stream) {
  const DeviceGuard guard(stream.device().index);
  CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDefault, native(stream)));
}

}  // namespace memento::cuda
