// SystemResource maps large blocks on their own and gives them back to the kernel (a freed
// tensor must not stay resident in malloc's heap), reuses them by size within a bound, and
// ScratchBuffer puts an op's scratch through a resource so that its tracking counts it.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <random>
#include <thread>
#include <vector>

#include "core/host_memory.h"
#include "core/memory_resource.h"
#include "memory/resources.h"

namespace memento {
namespace {

constexpr size_t kMiB = size_t{1} << 20;

size_t anonymous() { return read_process_memory().anonymous; }

// Keeps the compiler from eliding a malloc/free pair whose memory nobody reads.
void* opaque(void* p) {
  asm volatile("" : "+r"(p) : : "memory");
  return p;
}

void* touched(MemoryResource& r, size_t bytes) {
  void* p = r.allocate(bytes);
  std::memset(p, 1, bytes);  // resident only once written
  return p;
}

// The pattern that held 480 MiB for 84 MiB of tensors in a training run: malloc's dynamic
// threshold, raised by one large free, serves later tensors from the heap, and a small block
// allocated after them pins the freed ones there. SystemResource's blocks are not in the heap.
TEST(SystemResource, FreedTensorsLeaveTheProcessEvenBehindALiveSmallAllocation) {
  void* raise = opaque(std::malloc(16 * kMiB));  // glibc: the threshold becomes 16 MiB once freed
  std::memset(raise, 1, 16 * kMiB);
  std::free(opaque(raise));

  SystemResource system;
  system.set_cache_limit(0);  // no reuse: every freed mapping goes back at once
  const size_t before = anonymous();
  std::vector<void*> blocks;
  for (int i = 0; i < 48; ++i) blocks.push_back(touched(system, kMiB + 4096 * i));
  void* pin = opaque(std::malloc(64));  // lives on, after the tensors
  std::memset(pin, 1, 64);
  EXPECT_GE(anonymous(), before + 40 * kMiB);
  for (int i = 0; i < 48; ++i) system.deallocate(blocks[i], kMiB + 4096 * i);
  EXPECT_LT(anonymous(), before + 4 * kMiB) << "48 MiB of freed tensors are still resident";
  std::free(opaque(pin));
  EXPECT_EQ(system.stats().mapped_live, 0u);
  EXPECT_EQ(system.stats().maps, 48u);
  EXPECT_EQ(system.stats().unmaps, 48u);
}

TEST(SystemResource, ReusesAFreedMappingOfTheSameSize) {
  SystemResource system;
  void* a = system.allocate(3 * kMiB);
  system.deallocate(a, 3 * kMiB);
  EXPECT_EQ(system.stats().cached, 3 * kMiB);
  void* b = system.allocate(3 * kMiB - 100);  // the same number of pages
  EXPECT_EQ(b, a);
  EXPECT_EQ(system.stats().maps, 1u);
  EXPECT_EQ(system.stats().reuses, 1u);
  EXPECT_EQ(system.stats().cached, 0u);
  EXPECT_EQ(system.stats().mapped_live, 3 * kMiB);
  void* c = system.allocate(2 * kMiB);  // another size maps anew
  EXPECT_NE(c, a);
  EXPECT_EQ(system.stats().maps, 2u);
  system.deallocate(b, 3 * kMiB - 100);
  system.deallocate(c, 2 * kMiB);
  system.release_cached();
  EXPECT_EQ(system.stats().cached, 0u);
  EXPECT_EQ(system.stats().unmaps, 2u);
}

TEST(SystemResource, SmallBlocksComeFromTheHeapAndAreCounted) {
  SystemResource system;
  void* p = system.allocate(1000);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(p) % MemoryResource::kAlignment, 0u);
  EXPECT_EQ(system.stats().heap_live, 1024u);
  EXPECT_EQ(system.stats().maps, 0u);
  system.deallocate(p, 1000);
  EXPECT_EQ(system.stats().heap_live, 0u);
  EXPECT_EQ(system.allocate(0), nullptr);
}

// However sizes come and go, the cache never holds more than the most ever live at once.
TEST(SystemResource, CacheNeverExceedsThePeakOfLiveBytes) {
  SystemResource system;
  std::mt19937 rng(7);
  std::vector<std::pair<void*, size_t>> live;
  for (int i = 0; i < 2000; ++i) {
    if (live.empty() || rng() % 3 != 0) {
      const size_t bytes = SystemResource::kMapThreshold * (1 + rng() % 40);
      live.emplace_back(system.allocate(bytes), bytes);
    } else {
      const size_t k = rng() % live.size();
      system.deallocate(live[k].first, live[k].second);
      live.erase(live.begin() + static_cast<std::ptrdiff_t>(k));
    }
    const SystemResource::Stats s = system.stats();
    ASSERT_LE(s.cached, s.mapped_peak);
    ASSERT_LE(s.mapped_live, s.mapped_peak);
  }
  for (auto [p, bytes] : live) system.deallocate(p, bytes);
  EXPECT_GT(system.stats().reuses, 0u);
  system.set_cache_limit(5 * kMiB);
  EXPECT_LE(system.stats().cached, 5 * kMiB);
  system.release_cached();
  const SystemResource::Stats s = system.stats();
  EXPECT_EQ(s.mapped_live, 0u);
  EXPECT_EQ(s.cached, 0u);
  EXPECT_EQ(s.maps, s.unmaps);
}

// trim() at step boundaries keeps what each step reuses and drops what no step asked for again.
TEST(SystemResource, TrimDropsBlocksIdleForAWholeInterval) {
  SystemResource system;
  const size_t step_size = 2 * kMiB, one_off = kMiB;
  void* held = system.allocate(16 * kMiB);  // e.g. the parameters, live throughout
  void* x = system.allocate(one_off);       // e.g. a start-up probe, before the steps
  system.deallocate(x, one_off);
  for (int step = 0; step < 4; ++step) {
    void* a = system.allocate(step_size);
    void* b = system.allocate(step_size);
    system.deallocate(a, step_size);
    system.deallocate(b, step_size);
    system.trim();
    const SystemResource::Stats s = system.stats();
    EXPECT_EQ(s.maps, 4u) << "step " << step << ": the step's two blocks are reused";
    // The one-off block is idle through the first full interval and dropped at its end.
    EXPECT_EQ(s.cached, step == 0 ? one_off + 2 * step_size : 2 * step_size) << "step " << step;
  }
  system.trim();  // an interval without any allocation: everything idle
  system.trim();
  EXPECT_EQ(system.stats().cached, 0u);
  system.deallocate(held, 16 * kMiB);
  system.release_cached();
  EXPECT_EQ(system.stats().maps, system.stats().unmaps);
}

// Over the bound, the least recently used blocks make room for the one just freed.
TEST(SystemResource, EvictsTheLeastRecentlyUsedBlocks) {
  SystemResource system;
  void* big = system.allocate(8 * kMiB);  // the peak: at most 8 MiB cached from now on
  system.deallocate(big, 8 * kMiB);
  EXPECT_EQ(system.stats().cached, 8 * kMiB);
  void* a = system.allocate(3 * kMiB);
  system.deallocate(a, 3 * kMiB);  // 11 MiB > 8 MiB: the 8 MiB block, older, goes
  const SystemResource::Stats s = system.stats();
  EXPECT_EQ(s.cached, 3 * kMiB);
  EXPECT_EQ(s.unmaps, 1u);
  EXPECT_EQ(system.allocate(3 * kMiB), a);
  system.deallocate(a, 3 * kMiB);
  system.release_cached();
}

TEST(SystemResource, ConcurrentUseKeepsTheBooksBalanced) {
  SystemResource system;
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&system, t] {
      std::mt19937 rng(static_cast<unsigned>(t));
      std::vector<std::pair<void*, size_t>> held;
      for (int i = 0; i < 500; ++i) {
        const size_t bytes = (rng() % 2 ? 1000 : SystemResource::kMapThreshold) * (1 + rng() % 8);
        held.emplace_back(system.allocate(bytes), bytes);
        std::memset(held.back().first, t, 64);
        if (held.size() > 6) {
          system.deallocate(held.front().first, held.front().second);
          held.erase(held.begin());
        }
        if (i % 50 == 0) system.trim();
      }
      for (auto [p, bytes] : held) system.deallocate(p, bytes);
    });
  }
  for (auto& th : threads) th.join();
  const SystemResource::Stats s = system.stats();
  EXPECT_EQ(s.heap_live, 0u);
  EXPECT_EQ(s.mapped_live, 0u);
  system.release_cached();
  EXPECT_EQ(system.stats().maps, system.stats().unmaps);
}

TEST(SystemResource, IsTheCpuDefault) {
  EXPECT_EQ(default_resource(Device::cpu()), &system_resource());
  TrackingResource tracking(&system_resource());
  {
    const ScopedDefaultResource scope(&tracking);
    EXPECT_EQ(default_resource(Device::cpu()), &tracking);
  }
  EXPECT_EQ(default_resource(Device::cpu()), &system_resource());
}

TEST(ScratchBuffer, SlicesAreAlignedZeroedAndTracked) {
  TrackingResource tracking(&system_resource());
  {
    const ScratchBuffer scratch(100, 3, &tracking);
    EXPECT_EQ(scratch.bytes(), 3u * 128u);  // each slice rounded to the 64-byte alignment
    EXPECT_EQ(tracking.current_bytes(), 3u * 128u);
    for (int i = 0; i < 3; ++i) {
      const char* s = scratch.slice<char>(i);
      EXPECT_EQ(reinterpret_cast<uintptr_t>(s) % MemoryResource::kAlignment, 0u);
      EXPECT_TRUE(std::all_of(s, s + 100, [](char c) { return c == 0; }));
    }
    EXPECT_EQ(scratch.slice<char>(1) - scratch.slice<char>(0), 128);
  }
  EXPECT_EQ(tracking.current_bytes(), 0u);
  EXPECT_EQ(tracking.peak_bytes(), 3u * 128u);
}

TEST(ScratchBuffer, OnMetaIsCountedButHasNoBytes) {
  TrackingResource tracking(default_resource(Device::meta()));
  {
    const ScratchBuffer scratch(1 << 20, 2, &tracking);
    EXPECT_EQ(scratch.slice<float>(1), nullptr);
    EXPECT_EQ(tracking.current_bytes(), 2u << 20);
  }
  EXPECT_EQ(tracking.current_bytes(), 0u);
}

}  // namespace
}  // namespace memento
