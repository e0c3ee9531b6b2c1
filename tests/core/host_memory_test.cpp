// The process-memory figures and the malloc settings of core/host_memory.h. A test binary of its
// own: configure_host_allocator() changes malloc for the whole process.
#include "core/host_memory.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "core/memory_resource.h"

namespace memento {
namespace {

constexpr size_t kMiB = size_t{1} << 20;

// Keeps the compiler from eliding a malloc/free pair whose memory nobody reads.
void* opaque(void* p) {
  asm volatile("" : "+r"(p) : : "memory");
  return p;
}

TEST(ProcessMemory, ReadsTheKernelsFigures) {
  const ProcessMemory before = read_process_memory();
  ASSERT_GT(before.resident, 0u);
  EXPECT_GE(before.resident, before.anonymous);
  EXPECT_GE(before.peak_resident, before.resident);
  std::vector<char> block(32 * kMiB, 1);
  const ProcessMemory after = read_process_memory();
  EXPECT_GE(after.anonymous, before.anonymous + 30 * kMiB);
}

// A library's large blocks freed behind a live small one: glibc's dynamic threshold, raised by an
// earlier 16 MiB free, kept them in the heap, resident; with the fixed threshold each is its own
// mapping, returned on free.
TEST(ConfigureHostAllocator, FreedLargeMallocsLeaveTheProcess) {
  configure_host_allocator();
  void* raise = opaque(std::malloc(16 * kMiB));
  std::memset(raise, 1, 16 * kMiB);
  std::free(opaque(raise));

  const size_t before = read_process_memory().anonymous;
  std::vector<void*> blocks;
  for (int i = 0; i < 12; ++i) {
    blocks.push_back(opaque(std::malloc(kHostMmapThreshold)));
    std::memset(blocks.back(), 1, kHostMmapThreshold);
  }
  void* pin = opaque(std::malloc(64));
  std::memset(pin, 1, 64);
  EXPECT_GE(read_process_memory().anonymous, before + 40 * kMiB);
  for (void* p : blocks) std::free(opaque(p));
  EXPECT_LT(read_process_memory().anonymous, before + 4 * kMiB)
      << "48 MiB of freed malloc blocks are still resident";
  std::free(opaque(pin));
}

TEST(HostMemoryAccount, CountsTensorsCachedBlocksAndTheLibraries) {
  record_library_baseline();
  const HostMemoryAccount start = account_host_memory();
  void* p = system_resource().allocate(24 * kMiB);
  std::memset(p, 1, 24 * kMiB);
  const HostMemoryAccount live = account_host_memory();
  EXPECT_EQ(live.tensors, start.tensors + 24 * kMiB);
  EXPECT_GE(live.process.anonymous, start.process.anonymous + 23 * kMiB);
  system_resource().deallocate(p, 24 * kMiB);
  const HostMemoryAccount cached = account_host_memory();
  EXPECT_EQ(cached.tensors, start.tensors);
  EXPECT_EQ(cached.cached, start.cached + 24 * kMiB);  // kept for the next step's tensors
  // What the account cannot name stays small: anonymous ~ tensors + cached + heap + libraries.
  EXPECT_LT(std::llabs(cached.unaccounted), static_cast<long long>(8 * kMiB))
      << format_host_memory(cached);
  const std::string line = format_host_memory(cached);
  EXPECT_NE(line.find("tensors"), std::string::npos) << line;
  EXPECT_NE(line.find("cached 24."), std::string::npos) << line;

  // Two step boundaries without a use: the block is returned.
  trim_host_memory();
  trim_host_memory();
  const HostMemoryAccount trimmed = account_host_memory();
  EXPECT_EQ(trimmed.cached, 0u);
  EXPECT_LT(trimmed.process.anonymous, cached.process.anonymous - 20 * kMiB);

  void* again = system_resource().allocate(24 * kMiB);
  std::memset(again, 1, 24 * kMiB);
  system_resource().deallocate(again, 24 * kMiB);
  EXPECT_EQ(account_host_memory().cached, 24 * kMiB);
  release_host_memory();  // at once, whatever the last step used
  EXPECT_EQ(account_host_memory().cached, 0u);
}

}  // namespace
}  // namespace memento
