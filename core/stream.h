// Streams, events and asynchronous copies: ordered queues of work on a device, the events that
// order them against each other, and tensor copies that run on them. One API for both backends:
//   GPU: a Stream is a non-blocking CUDA stream (it never waits for the legacy default stream, so
//        its work overlaps compute); events are CUDA events; copy_async is cudaMemcpyAsync.
//   CPU: a null StreamView (and compute_stream(cpu)) is synchronous: work on it runs at once on
//        the calling thread, so every caller of this API runs and is tested on the CPU. A Stream
//        created explicitly owns a worker thread that runs its work in order: a copy on it
//        overlaps compute on the calling thread.
// The ops compute on compute_stream(device): today the legacy default stream on a GPU. Moving
// compute to a stream of its own is one change there (docs/architecture-streams.md).
#pragma once

#include <functional>
#include <memory>

#include "core/memory_resource.h"
#include "core/tensor.h"

namespace memento {

class Event;
namespace detail {
struct EventState;  // stream.cpp
}  // namespace detail

// A non-owning handle of a stream, cheap and passed by value. The default one is the CPU's
// synchronous stream. Its stream must outlive it (a Stream, or a device's compute stream).
class StreamView {
 public:
  StreamView() = default;
  // `handle` is a cudaStream_t on a GPU; on the CPU a worker queue (stream.cpp), or null for the
  // synchronous stream.
  StreamView(Device device, void* handle) : device_(device), handle_(handle) {}

  Device device() const { return device_; }
  void* handle() const { return handle_; }
  // True when work on it runs at once on the calling thread (the CPU's and kMeta's null stream).
  bool is_synchronous() const { return device_.kind != DeviceKind::kCuda && handle_ == nullptr; }
  // Blocks until the work queued on the stream so far has finished. On a CPU stream, rethrows the
  // first exception its work has thrown since the last synchronize().
  void synchronize() const;
  // Work queued on this stream from now on starts after `event`'s last record has completed (an
  // event never recorded: no wait). A synchronous stream, or a GPU stream waiting for a CPU
  // event, waits here on the calling thread.
  void wait(const Event& event) const;

  friend bool operator==(const StreamView&, const StreamView&) = default;

 private:
  Device device_ = Device::cpu();
  void* handle_ = nullptr;
};

// The stream the ops of `device` compute on: the legacy default stream on a GPU (cudaStreamLegacy,
// which the memory pool's synchronous overloads also use), the synchronous stream on the CPU and
// kMeta.
StreamView compute_stream(Device device);

// An owning stream, move-only. On a GPU a non-blocking CUDA stream on `device`; on the CPU a
// worker thread that runs the stream's work in order (thread-safe: any thread may queue work);
// on kMeta the synchronous stream.
class Stream {
 public:
  explicit Stream(Device device = Device::cpu());
  // A CPU stream finishes its queued work first (the work may point at memory of the caller);
  // a GPU stream is destroyed at once and its queued work still completes (cudaStreamDestroy).
  ~Stream();
  Stream(Stream&& other) noexcept;
  Stream& operator=(Stream&& other) noexcept;
  Stream(const Stream&) = delete;
  Stream& operator=(const Stream&) = delete;

  StreamView view() const { return view_; }
  operator StreamView() const { return view_; }  // NOLINT: streams are passed as views
  Device device() const { return view_.device(); }
  void synchronize() const { view_.synchronize(); }
  void wait(const Event& event) const { view_.wait(event); }

 private:
  void release() noexcept;
  StreamView view_;
};

// Queues host code on the stream: on a synchronous stream it runs now; on a CPU Stream on its
// worker, after the work queued before it; on a GPU stream as a host function in stream order
// (cudaLaunchHostFunc: `work` must not call CUDA; an exception it throws aborts the job).
void enqueue(StreamView stream, std::function<void()> work);

// A point in a stream's work. Move-only; recording, querying and waiting are thread-safe for
// different Event objects, one Event is used by one thread at a time. Events mark every record
// with a time: on a GPU the device clock, on the CPU the steady clock when the event completes.
class Event {
 public:
  Event();
  ~Event();
  Event(Event&& other) noexcept;
  Event& operator=(Event&& other) noexcept;
  Event(const Event&) = delete;
  Event& operator=(const Event&) = delete;

  // Captures the work queued on `stream` so far: the event completes when that work has
  // finished (at once on a synchronous stream). Recording again captures anew; streams already
  // waiting on the previous record keep waiting on that one.
  void record(StreamView stream);
  // True when the last record has completed, or when the event was never recorded (as CUDA).
  bool query() const;
  // Blocks the calling thread until the last record has completed (no busy wait).
  void synchronize() const;
  // Milliseconds from `start`'s completion to this event's, both completed and recorded on the
  // same kind of device (one GPU, or the CPU); negative when this one completed first. Throws
  // Error otherwise.
  double elapsed_ms_since(const Event& start) const;
  // The device of the stream it was last recorded on (the CPU when never recorded).
  Device device() const;

 private:
  friend class StreamView;
  std::shared_ptr<detail::EventState> state_;  // shared with the streams waiting on it
};

// Copies src's bytes into dst on `stream`: same dtype and element count (ShapeError otherwise),
// host<->device, device<->device or host<->host. The call only queues the copy (on a synchronous
// stream it runs now): both tensors' bytes must stay alive and unwritten until it has finished
// (record an Event after it). A GPU tensor needs a GPU stream (Error). On a GPU,
// cudaMemcpyAsync: from or to pinned host memory (pinned_host_memory()) the copy is a DMA that
// overlaps everything else; with pageable host memory the driver stages it, and the call returns
// only when a device-to-host copy has finished (host-to-device: when the bytes are staged).
// kMeta tensors: nothing.
void copy_async(const TensorView& src, const TensorView& dst, StreamView stream);

namespace detail {
// Test-only: while on, Streams created on the CPU are synchronous (no worker thread), so a test
// can show that its overlap check fails without the worker. Returns the previous setting.
bool set_synchronous_cpu_streams_for_testing(bool on);
}  // namespace detail

}  // namespace memento
