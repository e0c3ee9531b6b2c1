#include "core/stream.h"

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstring>
#include <deque>
#include <exception>
#include <mutex>
#include <thread>
#include <utility>

#include "core/error.h"
#ifdef MEMENTO_WITH_CUDA
#include "core/cuda/stream.h"
#endif

namespace memento {
namespace detail {

using Clock = std::chrono::steady_clock;

// A CPU stream: one worker thread that runs queued work in order. Work is numbered as queued and
// as finished, so synchronize() waits for what was queued before it, not for work queued while
// it waits. Condition variables throughout: nothing spins.
class CpuQueue {
 public:
  CpuQueue() : worker_([this] { run(); }) {}
  ~CpuQueue() {
    {
      const std::lock_guard<std::mutex> lock(mutex_);
      stop_ = true;
    }
    work_ready_.notify_one();
    worker_.join();  // run() drains the queue before it returns
  }
  CpuQueue(const CpuQueue&) = delete;
  CpuQueue& operator=(const CpuQueue&) = delete;

  void push(std::function<void()> work) {
    {
      const std::lock_guard<std::mutex> lock(mutex_);
      queue_.push_back(std::move(work));
      ++queued_;
    }
    work_ready_.notify_one();
  }

  void synchronize() {
    std::unique_lock<std::mutex> lock(mutex_);
    const uint64_t target = queued_;
    work_done_.wait(lock, [&] { return finished_ >= target; });
    if (error_) std::rethrow_exception(std::exchange(error_, nullptr));
  }

 private:
  void run() {
    std::unique_lock<std::mutex> lock(mutex_);
    for (;;) {
      work_ready_.wait(lock, [&] { return stop_ || !queue_.empty(); });
      if (queue_.empty()) return;  // stopping, and nothing is left
      std::function<void()> work = std::move(queue_.front());
      queue_.pop_front();
      lock.unlock();
      // Work after a failed one still runs: events recorded after it must complete, or their
      // waiters would hang. The first error reaches the next synchronize().
      std::exception_ptr error;
      try {
        work();
      } catch (...) {
        error = std::current_exception();
      }
      work = nullptr;  // its captures die outside the lock
      lock.lock();
      if (error && !error_) error_ = error;
      ++finished_;
      work_done_.notify_all();
    }
  }

  std::mutex mutex_;
  std::condition_variable work_ready_;
  std::condition_variable work_done_;
  std::deque<std::function<void()>> queue_;
  uint64_t queued_ = 0;
  uint64_t finished_ = 0;
  bool stop_ = false;
  std::exception_ptr error_;
  std::thread worker_;  // last: starts once the members it uses exist
};

// One record of an Event. CPU: completes when the stream reaches it, stamped with the steady
// clock. GPU: a cudaEvent_t (reused by the next record when no stream still waits on this one).
struct EventState {
  Device device = Device::cpu();
  std::mutex mutex;
  std::condition_variable completed;
  bool done = false;
  Clock::time_point time;
  void* cuda_event = nullptr;

  EventState() = default;
  EventState(const EventState&) = delete;
  EventState& operator=(const EventState&) = delete;
  ~EventState() {
#ifdef MEMENTO_WITH_CUDA
    cuda::destroy_event(static_cast<cudaEvent_t>(cuda_event));
#endif
  }

  void complete() {
    {
      const std::lock_guard<std::mutex> lock(mutex);
      time = Clock::now();
      done = true;
    }
    completed.notify_all();
  }
  void wait() {
    std::unique_lock<std::mutex> lock(mutex);
    completed.wait(lock, [&] { return done; });
  }
  bool is_done() {
    const std::lock_guard<std::mutex> lock(mutex);
    return done;
  }
};

namespace {
std::atomic<bool> g_synchronous_cpu_streams{false};

CpuQueue* cpu_queue(StreamView stream) { return static_cast<CpuQueue*>(stream.handle()); }
bool on_gpu(Device device) { return device.kind == DeviceKind::kCuda; }

[[noreturn, maybe_unused]] void no_cuda(const char* what) {
  ::memento::detail::fatal(__FILE__, __LINE__,
                           concat(what, ": a GPU stream or event in a build without CUDA"));
}
}  // namespace

bool set_synchronous_cpu_streams_for_testing(bool on) {
  return g_synchronous_cpu_streams.exchange(on);
}

}  // namespace detail

using detail::cpu_queue;
using detail::on_gpu;

void StreamView::synchronize() const {
  if (on_gpu(device_)) {
#ifdef MEMENTO_WITH_CUDA
    return cuda::synchronize_stream(cuda::native(*this));
#else
    detail::no_cuda("synchronize");
#endif
  }
  if (handle_ != nullptr) cpu_queue(*this)->synchronize();
}

void StreamView::wait(const Event& event) const {
  const std::shared_ptr<detail::EventState> state = event.state_;
  if (!state) return;
  if (on_gpu(state->device)) {
#ifdef MEMENTO_WITH_CUDA
    const auto cuda_event = static_cast<cudaEvent_t>(state->cuda_event);
    if (on_gpu(device_)) return cuda::stream_wait_event(cuda::native(*this), cuda_event);
    if (handle_ == nullptr) return cuda::synchronize_event(cuda_event);
    // The worker holds the record alive: a later record of the Event takes a new cudaEvent_t.
    return cpu_queue(*this)->push(
        [state] { cuda::synchronize_event(static_cast<cudaEvent_t>(state->cuda_event)); });
#else
    detail::no_cuda("wait");
#endif
  }
  if (state->is_done()) return;
  // A GPU stream cannot wait for a host condition without blocking a CUDA runtime thread, so the
  // host waits here, before the work that must follow is queued.
  if (handle_ == nullptr || on_gpu(device_)) return state->wait();
  cpu_queue(*this)->push([state] { state->wait(); });
}

StreamView compute_stream(Device device) {
  if (on_gpu(device)) {
#ifdef MEMENTO_WITH_CUDA
    return cuda::compute_stream_of(device.index);
#else
    detail::no_cuda("compute_stream");
#endif
  }
  return StreamView(device, nullptr);
}

Stream::Stream(Device device) : view_(device, nullptr) {
  if (on_gpu(device)) {
#ifdef MEMENTO_WITH_CUDA
    view_ = StreamView(device, cuda::create_nonblocking_stream(device.index));
    return;
#else
    detail::no_cuda("Stream");
#endif
  }
  if (device.is_cpu() && !detail::g_synchronous_cpu_streams.load())
    view_ = StreamView(device, new detail::CpuQueue);
}

void Stream::release() noexcept {
  if (view_.handle() == nullptr) return;
  if (on_gpu(view_.device())) {
#ifdef MEMENTO_WITH_CUDA
    cuda::destroy_stream(static_cast<cudaStream_t>(view_.handle()));
#endif
  } else {
    delete cpu_queue(view_);
  }
  view_ = StreamView(view_.device(), nullptr);
}

Stream::~Stream() { release(); }

Stream::Stream(Stream&& other) noexcept
    : view_(std::exchange(other.view_, StreamView(other.view_.device(), nullptr))) {}

Stream& Stream::operator=(Stream&& other) noexcept {
  if (this != &other) {
    release();
    view_ = std::exchange(other.view_, StreamView(other.view_.device(), nullptr));
  }
  return *this;
}

void enqueue(StreamView stream, std::function<void()> work) {
  if (on_gpu(stream.device())) {
#ifdef MEMENTO_WITH_CUDA
    return cuda::launch_host_work(cuda::native(stream), std::move(work));
#else
    detail::no_cuda("enqueue");
#endif
  }
  if (stream.handle() == nullptr) return work();
  cpu_queue(stream)->push(std::move(work));
}

Event::Event() = default;
Event::~Event() = default;
Event::Event(Event&& other) noexcept = default;
Event& Event::operator=(Event&& other) noexcept = default;

void Event::record(StreamView stream) {
  if (on_gpu(stream.device())) {
#ifdef MEMENTO_WITH_CUDA
    // Reuse the cudaEvent_t when nothing else holds this record (no CPU worker waits on it).
    if (!state_ || state_.use_count() > 1 || state_->device != stream.device()) {
      state_ = std::make_shared<detail::EventState>();
      state_->device = stream.device();
      state_->cuda_event = cuda::create_event(stream.device().index);
    }
    return cuda::record_event(static_cast<cudaEvent_t>(state_->cuda_event), cuda::native(stream));
#else
    detail::no_cuda("Event::record");
#endif
  }
  auto state = std::make_shared<detail::EventState>();
  state->device = stream.device();
  if (stream.handle() == nullptr) {
    state->complete();
  } else {
    cpu_queue(stream)->push([state] { state->complete(); });
  }
  state_ = std::move(state);
}

bool Event::query() const {
  if (!state_) return true;
#ifdef MEMENTO_WITH_CUDA
  if (on_gpu(state_->device))
    return cuda::query_event(static_cast<cudaEvent_t>(state_->cuda_event));
#endif
  return state_->is_done();
}

void Event::synchronize() const {
  if (!state_) return;
#ifdef MEMENTO_WITH_CUDA
  if (on_gpu(state_->device))
    return cuda::synchronize_event(static_cast<cudaEvent_t>(state_->cuda_event));
#endif
  state_->wait();
}

double Event::elapsed_ms_since(const Event& start) const {
  MEMENTO_EXPECT(state_ && start.state_, Error, "Event::elapsed_ms_since: an event never recorded");
  const bool gpu = on_gpu(state_->device);
  MEMENTO_EXPECT(
      gpu == on_gpu(start.state_->device) && (!gpu || state_->device == start.state_->device),
      Error, "Event::elapsed_ms_since: events on ", device_name(start.state_->device), " and ",
      device_name(state_->device));
  MEMENTO_EXPECT(query() && start.query(), Error,
                 "Event::elapsed_ms_since: an event has not completed");
#ifdef MEMENTO_WITH_CUDA
  if (gpu)
    return cuda::elapsed_ms(static_cast<cudaEvent_t>(start.state_->cuda_event),
                            static_cast<cudaEvent_t>(state_->cuda_event));
#endif
  return std::chrono::duration<double, std::milli>(state_->time - start.state_->time).count();
}

Device Event::device() const { return state_ ? state_->device : Device::cpu(); }

void copy_async(const TensorView& src, const TensorView& dst, StreamView stream) {
  MEMENTO_EXPECT(src.numel() == dst.numel(), ShapeError, "copy_async: ", src.shape().str(),
                 " into ", dst.shape().str());
  MEMENTO_EXPECT(src.dtype() == dst.dtype(), ShapeError, "copy_async: ", dtype_name(src.dtype()),
                 " into ", dtype_name(dst.dtype()), " (copy() converts; copy_async does not)");
  if (src.is_meta() || dst.is_meta() || src.bytes() == 0) return;
  const bool gpu_tensor = on_gpu(src.device()) || on_gpu(dst.device());
  MEMENTO_EXPECT(!gpu_tensor || on_gpu(stream.device()), Error, "copy_async: a tensor on ",
                 device_name(on_gpu(src.device()) ? src.device() : dst.device()),
                 " needs a GPU stream, got one on ", device_name(stream.device()));
  if (on_gpu(stream.device())) {
#ifdef MEMENTO_WITH_CUDA
    return cuda::copy_bytes_async(dst.raw(), src.raw(), src.bytes(), stream);
#else
    detail::no_cuda("copy_async");
#endif
  }
  void* to = dst.raw();
  const void* from = src.raw();
  const size_t bytes = src.bytes();
  enqueue(stream, [to, from, bytes] { std::memcpy(to, from, bytes); });
}

}  // namespace memento
