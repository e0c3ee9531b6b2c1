#include "memory/resources.h"

#include <gtest/gtest.h>

#include <atomic>
#include <cstdint>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "core/error.h"
#include "core/tensor.h"

namespace memento {
namespace {

// Counts calls, forwards to the system resource, and can be told to fail.
class CountingResource final : public MemoryResource {
 public:
  void* allocate(size_t bytes) override {
    if (fail) throw OutOfMemoryError("counting: told to fail");
    ++allocations;
    return system_.allocate(bytes);
  }
  void deallocate(void* ptr, size_t bytes) noexcept override {
    ++deallocations;
    system_.deallocate(ptr, bytes);
  }
  Device device() const override { return Device::cpu(); }
  std::string name() const override { return "counting"; }

  bool fail = false;
  std::atomic<int> allocations{0};
  std::atomic<int> deallocations{0};

 private:
  SystemResource system_;
};

bool contains(const std::string& s, const std::string& part) {
  return s.find(part) != std::string::npos;
}

// ---- TrackingResource ----------------------------------------------------------------------

TEST(TrackingResource, CurrentAndPeak) {
  CountingResource upstream;
  TrackingResource t(&upstream);
  EXPECT_EQ(t.device(), Device::cpu());
  EXPECT_EQ(t.name(), "tracking(counting)");
  EXPECT_EQ(t.current_bytes(), 0u);
  EXPECT_EQ(t.peak_bytes(), 0u);
  void* a = t.allocate(100);
  void* b = t.allocate(300);
  ASSERT_NE(a, nullptr);
  ASSERT_NE(b, nullptr);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(a) % MemoryResource::kAlignment, 0u);
  std::memset(b, 0, 300);  // real memory from upstream
  EXPECT_EQ(upstream.allocations, 2);
  EXPECT_EQ(t.current_bytes(), 400u);
  EXPECT_EQ(t.peak_bytes(), 400u);
  t.deallocate(a, 100);
  EXPECT_EQ(upstream.deallocations, 1);
  EXPECT_EQ(t.current_bytes(), 300u);
  EXPECT_EQ(t.peak_bytes(), 400u);
  void* c = t.allocate(50);
  EXPECT_EQ(t.current_bytes(), 350u);
  EXPECT_EQ(t.peak_bytes(), 400u);  // below the old peak
  t.reset_peak();
  EXPECT_EQ(t.peak_bytes(), 350u);  // the peak restarts from what is live
  void* d = t.allocate(10);
  EXPECT_EQ(t.peak_bytes(), 360u);
  t.deallocate(b, 300);
  t.deallocate(c, 50);
  t.deallocate(d, 10);
  EXPECT_EQ(t.current_bytes(), 0u);
  EXPECT_EQ(t.peak_bytes(), 360u);
  EXPECT_EQ(upstream.deallocations, 4);
}

TEST(TrackingResource, UpstreamFailureCountsNothing) {
  CountingResource upstream;
  TrackingResource t(&upstream);
  void* a = t.allocate(64);
  upstream.fail = true;
  EXPECT_THROW(t.allocate(1000), OutOfMemoryError);
  EXPECT_EQ(t.current_bytes(), 64u);
  EXPECT_EQ(t.peak_bytes(), 64u);
  t.deallocate(a, 64);
}

TEST(TrackingResource, WorksOverMeta) {
  MetaResource meta;
  TrackingResource t(&meta);
  EXPECT_EQ(t.device(), Device::meta());
  EXPECT_EQ(t.name(), "tracking(meta)");
  void* p = t.allocate(size_t{1} << 40);  // a terabyte that does not exist
  EXPECT_EQ(p, nullptr);
  EXPECT_EQ(t.current_bytes(), size_t{1} << 40);
  t.deallocate(p, size_t{1} << 40);
  EXPECT_EQ(t.current_bytes(), 0u);
  EXPECT_EQ(t.peak_bytes(), size_t{1} << 40);
}

TEST(TrackingResource, ThreadSafeCounts) {
  CountingResource upstream;
  TrackingResource t(&upstream);
  const int threads = 4, rounds = 2000;
  std::vector<std::thread> pool;
  for (int k = 0; k < threads; ++k) {
    pool.emplace_back([&t, k] {
      for (int i = 0; i < rounds; ++i) {
        const size_t bytes = 64 * static_cast<size_t>(k + 1);
        void* p = t.allocate(bytes);
        t.deallocate(p, bytes);
      }
    });
  }
  for (auto& th : pool) th.join();
  EXPECT_EQ(t.current_bytes(), 0u);
  EXPECT_GE(t.peak_bytes(), 64u * 4u);
  EXPECT_LE(t.peak_bytes(), 64u * (1 + 2 + 3 + 4));
  EXPECT_EQ(upstream.allocations, threads * rounds);
  EXPECT_EQ(upstream.deallocations, threads * rounds);
}

// ---- LimitResource -------------------------------------------------------------------------

TEST(LimitResource, AllowsUpToTheBudgetExactly) {
  CountingResource upstream;
  LimitResource limit(&upstream, 1000);
  EXPECT_EQ(limit.budget(), 1000u);
  EXPECT_EQ(limit.name(), "limit(counting)");
  EXPECT_EQ(limit.device(), Device::cpu());
  void* a = limit.allocate(600);
  void* b = limit.allocate(400);  // exactly at the budget: allowed
  EXPECT_EQ(limit.current_bytes(), 1000u);
  EXPECT_THROW(limit.allocate(1), OutOfMemoryError);
  limit.deallocate(a, 600);
  EXPECT_EQ(limit.current_bytes(), 400u);
  void* c = limit.allocate(600);
  EXPECT_EQ(limit.current_bytes(), 1000u);
  limit.deallocate(b, 400);
  limit.deallocate(c, 600);
  EXPECT_EQ(limit.current_bytes(), 0u);
  EXPECT_EQ(upstream.allocations, 3);
  EXPECT_EQ(upstream.deallocations, 3);
}

TEST(LimitResource, RefusalNamesBudgetRequestAndLiveBytesAndChangesNothing) {
  CountingResource upstream;
  LimitResource limit(&upstream, size_t{1} << 20);  // 1 MiB
  void* a = limit.allocate(512);
  std::string msg;
  try {
    limit.allocate(size_t{3} << 20);
    ADD_FAILURE() << "no OutOfMemoryError";
  } catch (const OutOfMemoryError& e) {
    msg = e.what();
  }
  EXPECT_TRUE(contains(msg, "1.00 MiB")) << "budget: " << msg;
  EXPECT_TRUE(contains(msg, "3.00 MiB")) << "request: " << msg;
  EXPECT_TRUE(contains(msg, "512 B")) << "live: " << msg;
  EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
  // Consistent after the refusal: nothing reached upstream, nothing is counted.
  EXPECT_EQ(upstream.allocations, 1);
  EXPECT_EQ(limit.current_bytes(), 512u);
  void* b = limit.allocate((size_t{1} << 20) - 512);  // the rest of the budget still fits
  EXPECT_EQ(limit.current_bytes(), size_t{1} << 20);
  limit.deallocate(a, 512);
  limit.deallocate(b, (size_t{1} << 20) - 512);
  EXPECT_EQ(limit.current_bytes(), 0u);
}

TEST(LimitResource, UpstreamFailureIsNotCounted) {
  CountingResource upstream;
  LimitResource limit(&upstream, 1000);
  upstream.fail = true;
  EXPECT_THROW(limit.allocate(100), OutOfMemoryError);
  EXPECT_EQ(limit.current_bytes(), 0u);
  upstream.fail = false;
  void* p = limit.allocate(1000);
  EXPECT_EQ(limit.current_bytes(), 1000u);
  limit.deallocate(p, 1000);
}

TEST(LimitResource, BoundsTensorsAndComposesWithTracking) {
  SystemResource system;
  LimitResource limit(&system, 4096);
  TrackingResource tracking(&limit);
  {
    const Tensor a = Tensor::empty(Shape{512}, DType::kF32, Device::cpu(), &tracking);  // 2 KiB
    const Tensor b = Tensor::empty(Shape{256}, DType::kF64, Device::cpu(), &tracking);  // 2 KiB
    EXPECT_THROW(Tensor::empty(Shape{1}, DType::kF32, Device::cpu(), &tracking), OutOfMemoryError);
    EXPECT_EQ(tracking.current_bytes(), 4096u);
    EXPECT_EQ(limit.current_bytes(), 4096u);
  }
  EXPECT_EQ(tracking.current_bytes(), 0u);
  EXPECT_EQ(tracking.peak_bytes(), 4096u);
  EXPECT_EQ(limit.current_bytes(), 0u);
}

TEST(LimitResource, ConcurrentAllocationsNeverExceedTheBudget) {
  CountingResource upstream;
  const size_t budget = 64 * 10;
  LimitResource limit(&upstream, budget);
  TrackingResource tracking(&limit);  // its peak sees what actually got through
  std::atomic<int> refused{0};
  std::vector<std::thread> pool;
  for (int k = 0; k < 4; ++k) {
    pool.emplace_back([&] {
      std::vector<void*> held;
      for (int i = 0; i < 3000; ++i) {
        try {
          held.push_back(tracking.allocate(64));
        } catch (const OutOfMemoryError&) {
          ++refused;
        }
        if (held.size() > 3) {
          tracking.deallocate(held.front(), 64);
          held.erase(held.begin());
        }
      }
      for (void* p : held) tracking.deallocate(p, 64);
    });
  }
  for (auto& th : pool) th.join();
  EXPECT_LE(tracking.peak_bytes(), budget);
  EXPECT_EQ(limit.current_bytes(), 0u);
  EXPECT_EQ(tracking.current_bytes(), 0u);
  EXPECT_EQ(upstream.allocations, upstream.deallocations);
}

// ---- format_bytes --------------------------------------------------------------------------

TEST(FormatBytes, UnitsAndPrecision) {
  EXPECT_EQ(format_bytes(0), "0 B");
  EXPECT_EQ(format_bytes(512), "512 B");
  EXPECT_EQ(format_bytes(1023), "1023 B");
  EXPECT_EQ(format_bytes(1024), "1.00 KiB");
  EXPECT_EQ(format_bytes(1536), "1.50 KiB");
  EXPECT_EQ(format_bytes(1.5 * (1 << 30)), "1.50 GiB");
  EXPECT_EQ(format_bytes(1048576.0 * 1023), "1023.00 MiB");
  EXPECT_EQ(format_bytes(3.0 * (1ull << 40)), "3.00 TiB");
  EXPECT_EQ(format_bytes(2048.0 * (1ull << 40)), "2048.00 TiB");  // TiB is the largest unit
  const std::string twelve = format_bytes(12.0 * (1 << 20));
  EXPECT_EQ(twelve.rfind("12.0", 0), 0u) << twelve;
  EXPECT_TRUE(twelve.ends_with(" MiB")) << twelve;
}

}  // namespace
}  // namespace memento
