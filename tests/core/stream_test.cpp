// Streams, events and copy_async on the CPU: the synchronous default stream, a side Stream's
// worker (order, waits, errors, destruction), events between streams, host-to-host copies, the
// stream-ordered free of host memory, and a side-stream copy that overlaps GEMMs on the calling
// thread, proven by event times (and shown to fail when the side stream is made synchronous).
#include "core/stream.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <future>
#include <stdexcept>
#include <thread>
#include <vector>

#include "core/ops/matmul.h"
#include "core/tensor.h"

namespace memento {
namespace {

// Work that blocks its stream until open() is called: lets a test hold a side stream at a known
// point without sleeping. wait() gives up after `timeout`, so that on a synchronous stream (where
// it runs on the test's own thread, before open() can be called) it cannot hang the test.
class Gate {
 public:
  void open() { promise_.set_value(); }
  std::function<void()> closed_until_open(
      std::chrono::milliseconds timeout = std::chrono::seconds(30)) const {
    return [future = future_, timeout] { future.wait_for(timeout); };
  }

 private:
  std::promise<void> promise_;
  std::shared_future<void> future_ = promise_.get_future().share();
};

Tensor iota_f32(int64_t n, float offset = 0.f) {
  Tensor t = Tensor::empty(Shape{n}, DType::kF32);
  float* p = t.data<float>();
  for (int64_t i = 0; i < n; ++i) p[i] = offset + static_cast<float>(i);
  return t;
}

bool same_bytes(const TensorView& a, const TensorView& b) {
  return a.bytes() == b.bytes() && std::memcmp(a.raw(), b.raw(), a.bytes()) == 0;
}

TEST(CpuStream, TheDefaultStreamRunsWorkAtOnceOnTheCallingThread) {
  const StreamView sync = compute_stream(Device::cpu());
  EXPECT_EQ(sync, StreamView());
  EXPECT_TRUE(sync.is_synchronous());
  std::thread::id ran_on;
  enqueue(sync, [&] { ran_on = std::this_thread::get_id(); });
  EXPECT_EQ(ran_on, std::this_thread::get_id());  // already ran, here
  Event e;
  EXPECT_TRUE(e.query());  // never recorded
  e.record(sync);
  EXPECT_TRUE(e.query());
}

TEST(CpuStream, ASideStreamRunsItsWorkInOrderOnItsOwnThread) {
  Stream side(Device::cpu());
  EXPECT_FALSE(side.view().is_synchronous());
  std::vector<int> order;  // touched only by the worker until synchronize()
  std::thread::id ran_on;
  for (int i = 0; i < 1000; ++i) enqueue(side, [&order, i] { order.push_back(i); });
  enqueue(side, [&] { ran_on = std::this_thread::get_id(); });
  side.synchronize();
  ASSERT_EQ(order.size(), 1000u);
  for (int i = 0; i < 1000; ++i) EXPECT_EQ(order[static_cast<size_t>(i)], i);
  EXPECT_NE(ran_on, std::this_thread::get_id());
}

TEST(CpuStream, ManyThreadsQueueOntoOneStreamAndItsWorkNeverRunsConcurrently) {
  Stream side(Device::cpu());
  int64_t counter = 0;  // not atomic: only the worker touches it (ThreadSanitizer would object)
  std::vector<std::thread> producers;
  for (int t = 0; t < 4; ++t)
    producers.emplace_back([&] {
      for (int i = 0; i < 1000; ++i) enqueue(side, [&counter] { ++counter; });
    });
  for (std::thread& p : producers) p.join();
  side.synchronize();
  EXPECT_EQ(counter, 4000);
}

TEST(CpuStream, SynchronizeRethrowsTheFirstErrorOnceAndLaterWorkStillRuns) {
  Stream side(Device::cpu());
  bool later_ran = false;
  enqueue(side, [] { throw std::runtime_error("first"); });
  enqueue(side, [] { throw std::runtime_error("second"); });
  enqueue(side, [&] { later_ran = true; });
  try {
    side.synchronize();
    ADD_FAILURE() << "synchronize() did not rethrow";
  } catch (const std::runtime_error& e) {
    EXPECT_STREQ(e.what(), "first");
  }
  EXPECT_TRUE(later_ran);
  EXPECT_NO_THROW(side.synchronize());
}

TEST(CpuStream, DestroyingAStreamFinishesItsWorkAndAMovedFromStreamIsEmpty) {
  std::atomic<int> done{0};
  {
    Stream side(Device::cpu());
    Gate gate;
    enqueue(side, gate.closed_until_open());
    for (int i = 0; i < 100; ++i) enqueue(side, [&] { ++done; });
    Stream moved = std::move(side);
    EXPECT_EQ(side.view().handle(), nullptr);  // NOLINT(bugprone-use-after-move): it is empty
    EXPECT_EQ(done.load(), 0);                 // held at the gate
    gate.open();
  }
  EXPECT_EQ(done.load(), 100);
}

TEST(CpuEvent, CompletesWhenItsStreamReachesIt) {
  Stream side(Device::cpu());
  Gate gate;
  enqueue(side, gate.closed_until_open());
  Event e;
  e.record(side);
  EXPECT_FALSE(e.query());  // the stream is held before it
  gate.open();
  e.synchronize();
  EXPECT_TRUE(e.query());
  EXPECT_EQ(e.device(), Device::cpu());
}

// Stream B waits for an event of stream A, which is held at a gate: B's work must see A's write.
// `wait` false is the same without B.wait(e): B then runs first (the test above it could fail).
int value_seen_by_second_stream(bool wait) {
  Stream a(Device::cpu());
  Stream b(Device::cpu());
  Gate gate;
  int written = 0;
  int seen = -1;
  enqueue(a, gate.closed_until_open());
  enqueue(a, [&] { written = 1; });
  Event e;
  e.record(a);
  if (wait) b.wait(e);
  enqueue(b, [&] { seen = written; });
  if (!wait) b.synchronize();  // B is free to run; it does, before A is let go
  gate.open();
  b.synchronize();
  a.synchronize();
  return seen;
}

TEST(CpuEvent, AStreamWaitingOnAnEventRunsAfterTheWorkBeforeIt) {
  EXPECT_EQ(value_seen_by_second_stream(/*wait=*/true), 1);
}

TEST(CpuEvent, WithoutTheWaitTheSecondStreamRunsFirst) {
  EXPECT_EQ(value_seen_by_second_stream(/*wait=*/false), 0);
}

TEST(CpuEvent, AWaitHoldsTheRecordItSawNotALaterOne) {
  Stream a(Device::cpu());
  Stream b(Device::cpu());
  Gate first, second;
  enqueue(a, first.closed_until_open());
  Event e;
  e.record(a);  // record 1, held at the first gate
  b.wait(e);
  enqueue(a, second.closed_until_open(std::chrono::milliseconds(2000)));
  e.record(a);  // record 2, held at the second gate
  Event b_done;
  b_done.record(b);
  first.open();
  b_done.synchronize();                                        // b waited for record 1 only...
  EXPECT_FALSE(e.query()) << "b waited for the later record";  // ...record 2 is still held
  second.open();
  e.synchronize();
}

TEST(CpuEvent, TheDefaultStreamWaitsForASideStreamsEventOnTheCallingThread) {
  Stream side(Device::cpu());
  std::atomic<bool> written{false};
  enqueue(side, [&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));  // the wait must cover it
    written = true;
  });
  Event e;
  e.record(side);
  compute_stream(Device::cpu()).wait(e);
  EXPECT_TRUE(written.load());
}

TEST(CpuEvent, ElapsedTimeIsTheTimeBetweenCompletions) {
  Event start, stop, never;
  start.record(StreamView());
  std::this_thread::sleep_for(std::chrono::milliseconds(5));
  stop.record(StreamView());
  EXPECT_GE(stop.elapsed_ms_since(start), 5.0);
  EXPECT_LE(start.elapsed_ms_since(stop), -5.0);
  EXPECT_THROW((void)stop.elapsed_ms_since(never), Error);
  Stream side(Device::cpu());
  Gate gate;
  enqueue(side, gate.closed_until_open());
  Event pending;
  pending.record(side);
  EXPECT_THROW((void)pending.elapsed_ms_since(start), Error);  // not completed
  gate.open();
  pending.synchronize();
  EXPECT_GE(pending.elapsed_ms_since(stop), 0.0);
}

TEST(CopyAsync, HostToHostOnTheDefaultStreamIsDoneOnReturn) {
  const Tensor src = iota_f32(1000);
  const Tensor dst = Tensor::zeros(Shape{10, 100}, DType::kF32);  // same count, another shape
  copy_async(src, dst, StreamView());
  EXPECT_TRUE(same_bytes(src, dst));
}

TEST(CopyAsync, HostToHostOnASideStreamMatchesAfterAnEventForEveryDtypeAndView) {
  Stream side(Device::cpu());
  for (const DType dtype : {DType::kF32, DType::kBF16, DType::kF64, DType::kI32, DType::kU16}) {
    const Tensor src_f32 = iota_f32(4096, 0.5f);
    const Tensor src = Tensor::empty(src_f32.shape(), dtype);
    copy(src_f32, src);
    const Tensor dst = Tensor::zeros(Shape{4096 + 8}, dtype);
    // A view at an odd offset, into the middle of dst.
    const TensorView dst_part = dst.view().flat_range(3, Shape{4000});
    const TensorView src_part = src.view().flat_range(96, Shape{4000});
    copy_async(src_part, dst_part, side);
    Event done;
    done.record(side);
    done.synchronize();
    EXPECT_TRUE(same_bytes(src_part, dst_part)) << dtype_name(dtype);
    const Tensor zeros = Tensor::zeros(Shape{3}, dtype);
    EXPECT_TRUE(same_bytes(dst.view().flat_range(0, Shape{3}), zeros)) << "wrote before the view";
    const Tensor tail = Tensor::zeros(Shape{4096 + 8 - 4003}, dtype);
    EXPECT_TRUE(same_bytes(dst.view().flat_range(4003, Shape{4096 + 8 - 4003}), tail))
        << "wrote past the view";
  }
}

TEST(CopyAsync, RefusesDifferentDtypesCountsAndAGpuTensorOnACpuStream) {
  const Tensor a = Tensor::zeros(Shape{8}, DType::kF32);
  EXPECT_THROW(copy_async(a, Tensor::zeros(Shape{8}, DType::kBF16), StreamView()), ShapeError);
  EXPECT_THROW(copy_async(a, Tensor::zeros(Shape{9}, DType::kF32), StreamView()), ShapeError);
  // A view claiming to be on a GPU: refused before anything reads its (host) pointer.
  const TensorView on_gpu(a.view().raw(), Shape{8}, DType::kF32, Device{DeviceKind::kCuda, 0});
  EXPECT_THROW(copy_async(a, on_gpu, StreamView()), Error);
  const Tensor meta = Tensor::empty(Shape{8}, DType::kF32, Device::meta());
  EXPECT_NO_THROW(copy_async(meta, a, StreamView()));
}

// The stream-ordered free of memory without one of its own (MemoryResource's default): on a
// CPU side stream the block goes back only after the work queued before the free.
TEST(StreamOrderedFree, HostMemoryIsFreedAfterTheStreamsQueuedWork) {
  SystemResource system;
  Stream side(Device::cpu());
  constexpr size_t kBytes = 4096;
  auto* block = static_cast<unsigned char*>(system.allocate(kBytes, side));
  Gate gate;
  enqueue(side, gate.closed_until_open());
  enqueue(side, [block] { std::memset(block, 7, kBytes); });  // still to run at the free
  system.deallocate(block, kBytes, side);
  EXPECT_EQ(system.stats().heap_live, kBytes);  // not yet: the write is queued before it
  gate.open();
  side.synchronize();
  EXPECT_EQ(system.stats().heap_live, 0u);
  // On the synchronous stream the free is immediate.
  void* p = system.allocate(kBytes, StreamView());
  system.deallocate(p, kBytes, StreamView());
  EXPECT_EQ(system.stats().heap_live, 0u);
}

// A 64 MiB host-to-host copy on a side stream while the calling thread runs GEMMs. The side
// stream is held at a gate until the compute has begun (its start event), and the compute runs
// until the copy's completion event has fired (at least one GEMM): overlap means the copy's start
// and end events both lie inside the compute interval. No sleep: events and a gate.
struct OverlapResult {
  double copy_start_ms = 0;  // from the compute's start
  double copy_end_ms = 0;
  double compute_end_ms = 0;
  int gemms = 0;
  bool bytes_right = false;
  bool overlapped() const {
    return copy_start_ms >= 0 && copy_end_ms <= compute_end_ms && gemms >= 1;
  }
};

OverlapResult side_copy_during_gemms() {
  constexpr int64_t kFloats = int64_t{16} << 20;  // 64 MiB
  constexpr int kMaxGemms = 100000;               // a bound, never reached: the copy ends first
  const Tensor src = iota_f32(kFloats);
  const Tensor dst = Tensor::zeros(Shape{kFloats}, DType::kF32);
  const Tensor a = iota_f32(128 * 128, 1.f).reshape(Shape{128, 128});
  const Tensor c = Tensor::zeros(Shape{128, 128}, DType::kF32);
  ops::matmul(a, false, a, true, c);  // BLAS starts its threads here, not in the timed loop

  Stream side(Device::cpu());
  Gate gate;
  // On a synchronous stream this runs here and now and gives up after its timeout.
  enqueue(side, gate.closed_until_open(std::chrono::milliseconds(2000)));
  Event copy_start, copy_end, compute_start, compute_end;
  copy_start.record(side);
  copy_async(src, dst, side);
  copy_end.record(side);

  OverlapResult r;
  compute_start.record(compute_stream(Device::cpu()));
  gate.open();
  do {
    ops::matmul(a, false, a, true, c);
    ++r.gemms;
  } while (!copy_end.query() && r.gemms < kMaxGemms);
  compute_end.record(compute_stream(Device::cpu()));
  copy_end.synchronize();
  r.copy_start_ms = copy_start.elapsed_ms_since(compute_start);
  r.copy_end_ms = copy_end.elapsed_ms_since(compute_start);
  r.compute_end_ms = compute_end.elapsed_ms_since(compute_start);
  r.bytes_right = same_bytes(src, dst);
  return r;
}

void print(const char* what, const OverlapResult& r) {
  std::printf("[timing] %s: copy %.2f..%.2f ms, compute 0..%.2f ms, %d GEMMs (128^3)\n", what,
              r.copy_start_ms, r.copy_end_ms, r.compute_end_ms, r.gemms);
}

TEST(CpuOverlap, ASideStreamCopyRunsWhileTheCallingThreadComputes) {
  const OverlapResult r = side_copy_during_gemms();
  print("cpu side-stream copy 64 MiB during GEMMs", r);
  EXPECT_TRUE(r.bytes_right);
  EXPECT_TRUE(r.overlapped()) << "copy " << r.copy_start_ms << ".." << r.copy_end_ms
                              << " ms outside compute 0.." << r.compute_end_ms << " ms";
}

// The test-only switch makes the side stream synchronous: the same check then fails (the copy
// ran before the compute began), so the test above can fail.
TEST(CpuOverlap, WithASynchronousSideStreamTheOverlapCheckFails) {
  const bool before = detail::set_synchronous_cpu_streams_for_testing(true);
  const OverlapResult r = side_copy_during_gemms();
  detail::set_synchronous_cpu_streams_for_testing(before);
  print("cpu synchronous 'side' stream (test switch)", r);
  EXPECT_TRUE(r.bytes_right);
  EXPECT_FALSE(r.overlapped());
  EXPECT_LE(r.copy_end_ms, 0.0);  // the copy had ended before the compute began
}

}  // namespace
}  // namespace memento
