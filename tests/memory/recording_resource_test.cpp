// RecordingResource: the log of every request (size, tag, order, matching free) that MEMO's
// planner will replay, the scoped thread-local tags, the kMeta (null pointer) case, clearing
// between steps, the stream overloads, and its own overhead.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <random>
#include <thread>
#include <vector>

#include "core/stream.h"
#include "core/tensor.h"
#include "memory/resources.h"

namespace memento {
namespace {

std::string tag_of(const AllocationRecord& r) { return allocation_tag_name(r.tag); }

TEST(RecordingResource, LogsEachRequestInOrderWithItsTagAndItsFree) {
  SystemResource system;
  RecordingResource recording(&system);
  void* a = recording.allocate(100);
  void* b = nullptr;
  {
    ScopedAllocationTag tag("activations");
    b = recording.allocate(200);
    {
      ScopedAllocationTag inner("workspace");
      recording.deallocate(a, 100);
      void* c = recording.allocate(300);
      recording.deallocate(c, 300);
    }
    void* d = recording.allocate(400);  // the outer tag again
    recording.deallocate(d, 400);
  }
  const std::vector<AllocationRecord> log = recording.records();
  ASSERT_EQ(log.size(), 4u);
  // Ticks: a=0, b=1, free a=2, c=3, free c=4, d=5, free d=6; b is still live.
  EXPECT_EQ(log[0].bytes, 100u);
  EXPECT_EQ(log[0].order, 0u);
  EXPECT_EQ(log[0].free_order, 2u);
  EXPECT_EQ(tag_of(log[0]), "");
  EXPECT_EQ(log[1].bytes, 200u);
  EXPECT_EQ(log[1].order, 1u);
  EXPECT_EQ(log[1].free_order, AllocationRecord::kLive);
  EXPECT_EQ(tag_of(log[1]), "activations");
  EXPECT_EQ(log[2].bytes, 300u);
  EXPECT_EQ(log[2].order, 3u);
  EXPECT_EQ(log[2].free_order, 4u);
  EXPECT_EQ(tag_of(log[2]), "workspace");
  EXPECT_EQ(log[3].order, 5u);
  EXPECT_EQ(log[3].free_order, 6u);
  EXPECT_EQ(tag_of(log[3]), "activations");
  EXPECT_EQ(current_allocation_tag(), 0u);  // every scope restored the one outside it
  EXPECT_EQ(log[0].device, Device::cpu());
  EXPECT_EQ(log[0].stream, nullptr);
  recording.deallocate(b, 200);
  EXPECT_EQ(recording.records()[1].free_order, 7u);
  EXPECT_EQ(system.stats().heap_live, 0u);  // everything reached the upstream
}

TEST(RecordingResource, TagsAreThreadLocal) {
  SystemResource system;
  RecordingResource recording(&system);
  auto worker = [&](const char* tag, size_t bytes) {
    ScopedAllocationTag scope(tag);
    for (int i = 0; i < 200; ++i) recording.deallocate(recording.allocate(bytes), bytes);
  };
  std::thread t1(worker, "optimizer", 64);
  std::thread t2(worker, "activations", 128);
  t1.join();
  t2.join();
  const std::vector<AllocationRecord> log = recording.records();
  ASSERT_EQ(log.size(), 400u);
  for (const AllocationRecord& r : log) {
    EXPECT_EQ(tag_of(r), r.bytes == 64 ? "optimizer" : "activations");
    EXPECT_NE(r.free_order, AllocationRecord::kLive);
    EXPECT_GT(r.free_order, r.order);
  }
  EXPECT_EQ(recording.unmatched_frees(), 0u);
}

TEST(RecordingResource, RecordsTensorsOnMetaAndMatchesNullBlocksLastInFirstOut) {
  MetaResource meta;
  RecordingResource recording(&meta);
  {
    ScopedAllocationTag tag("activations");
    Tensor x = Tensor::empty(Shape{4, 8}, DType::kF32, Device::meta(), &recording);
    Tensor y = Tensor::empty(Shape{4, 8}, DType::kF32, Device::meta(), &recording);
    Tensor z = Tensor::empty(Shape{16}, DType::kBF16, Device::meta(), &recording);
    y = Tensor();  // y's free matches the newest live 128-byte block: y
    x = Tensor();
  }
  const std::vector<AllocationRecord> log = recording.records();
  ASSERT_EQ(log.size(), 3u);
  EXPECT_EQ(log[0].bytes, 128u);
  EXPECT_EQ(log[1].bytes, 128u);
  EXPECT_EQ(log[2].bytes, 32u);
  EXPECT_EQ(log[1].free_order, 3u);  // y
  EXPECT_EQ(log[0].free_order, 4u);  // x
  EXPECT_EQ(log[2].free_order, 5u);  // z, at the end of the scope
  EXPECT_EQ(tag_of(log[2]), "activations");
  EXPECT_EQ(log[2].device, Device::meta());
}

TEST(RecordingResource, ZeroByteRequestsAreFreedAtOnceAndUnknownFreesAreCounted) {
  SystemResource system;
  RecordingResource recording(&system);
  (void)Tensor::empty(Shape{0}, DType::kF32, Device::cpu(), &recording);
  void* foreign = system.allocate(64);  // not through the recorder
  recording.deallocate(foreign, 64);
  const std::vector<AllocationRecord> log = recording.records();
  ASSERT_EQ(log.size(), 1u);
  EXPECT_EQ(log[0].bytes, 0u);
  EXPECT_EQ(log[0].free_order, log[0].order);
  EXPECT_EQ(recording.unmatched_frees(), 1u);
  EXPECT_EQ(system.stats().heap_live, 0u);  // forwarded all the same
}

TEST(RecordingResource, ClearFreedKeepsOneStepAndLiveBlocksStillMatch) {
  SystemResource system;
  RecordingResource recording(&system);
  void* weights = recording.allocate(1000);  // lives across steps
  for (int step = 0; step < 3; ++step) {
    recording.clear_freed();
    void* act = recording.allocate(500);
    recording.deallocate(act, 500);
    const std::vector<AllocationRecord> log = recording.records();
    ASSERT_EQ(log.size(), 2u) << "step " << step;
    EXPECT_EQ(log[0].bytes, 1000u);
    EXPECT_EQ(log[1].bytes, 500u);
  }
  recording.deallocate(weights, 1000);
  const std::vector<AllocationRecord> log = recording.records();
  EXPECT_NE(log[0].free_order, AllocationRecord::kLive);
  EXPECT_GT(log[0].free_order, log[1].free_order);
  EXPECT_EQ(recording.unmatched_frees(), 0u);
}

// What the planner does with a log: replayed in tick order, the live bytes peak where a tracking
// resource measured the peak of the same run.
TEST(RecordingResource, ReplayingTheLogGivesTheTrackedPeak) {
  SystemResource system;
  TrackingResource tracking(&system);
  RecordingResource recording(&tracking);
  std::mt19937 rng(7);
  std::vector<std::pair<void*, size_t>> live;
  for (int i = 0; i < 2000; ++i) {
    if (live.empty() || rng() % 3 != 0) {
      const size_t bytes = 1 + rng() % 100000;
      live.emplace_back(recording.allocate(bytes), bytes);
    } else {
      const size_t k = rng() % live.size();
      recording.deallocate(live[k].first, live[k].second);
      live.erase(live.begin() + static_cast<std::ptrdiff_t>(k));
    }
  }
  std::vector<std::pair<uint64_t, int64_t>> events;  // (tick, +bytes or -bytes)
  for (const AllocationRecord& r : recording.records()) {
    events.emplace_back(r.order, static_cast<int64_t>(r.bytes));
    if (r.free_order != AllocationRecord::kLive)
      events.emplace_back(r.free_order, -static_cast<int64_t>(r.bytes));
  }
  std::sort(events.begin(), events.end());
  int64_t now = 0, peak = 0;
  for (const auto& [tick, delta] : events) peak = std::max(peak, now += delta);
  EXPECT_EQ(static_cast<size_t>(peak), tracking.peak_bytes());
  EXPECT_EQ(static_cast<size_t>(now), tracking.current_bytes());
  for (const auto& [p, bytes] : live) recording.deallocate(p, bytes);
  std::printf("[memory] RecordingResource: %zu B per record, %zu B for a log of %zu requests\n",
              sizeof(AllocationRecord), recording.overhead_bytes(), recording.records().size());
}

TEST(RecordingResource, OverheadGrowsWithTheLogAndShrinksWhenCleared) {
  SystemResource system;
  RecordingResource recording(&system);
  const size_t empty = recording.overhead_bytes();
  EXPECT_GE(empty, sizeof(RecordingResource));
  std::vector<void*> blocks;
  for (int i = 0; i < 1000; ++i) blocks.push_back(recording.allocate(64));
  const size_t with_live = recording.overhead_bytes();
  EXPECT_GE(with_live, empty + 1000 * (sizeof(AllocationRecord) + 2 * sizeof(void*)));
  for (void* p : blocks) recording.deallocate(p, 64);
  recording.clear_freed();
  EXPECT_EQ(recording.records().size(), 0u);
  // The vector's capacity is released with the freed records (a fresh vector is built).
  EXPECT_LT(recording.overhead_bytes(), with_live - 1000 * sizeof(AllocationRecord) / 2);
}

// The wrappers forward the stream-ordered overloads on the same stream: the recorder sees the
// stream through a limit, and the free of host memory on a CPU side stream waits for its work.
TEST(WrappedResources, ForwardTheStreamToTheResourceTheyWrap) {
  SystemResource system;
  RecordingResource recording(&system);
  LimitResource limit(&recording, 1 << 20);
  TrackingResource tracking(&limit);
  Stream side(Device::cpu());
  void* p = tracking.allocate(4096, side);
  std::vector<AllocationRecord> log = recording.records();
  ASSERT_EQ(log.size(), 1u);
  EXPECT_EQ(log[0].stream, side.view().handle());
  EXPECT_EQ(tracking.current_bytes(), 4096u);
  EXPECT_EQ(limit.current_bytes(), 4096u);
  tracking.deallocate(p, 4096, side);
  side.synchronize();  // the system resource's free ran on the side stream's worker
  EXPECT_EQ(system.stats().heap_live, 0u);
  EXPECT_EQ(tracking.current_bytes(), 0u);
  EXPECT_EQ(limit.current_bytes(), 0u);
  EXPECT_NE(recording.records()[0].free_order, AllocationRecord::kLive);
  EXPECT_THROW((void)tracking.allocate(2 << 20, side), OutOfMemoryError);  // the limit applies
}

}  // namespace
}  // namespace memento
