// Memory resources that wrap another: tracking (current and peak bytes), limiting (a byte budget
// enforced on every allocation, so tests can prove a memory bound on the CPU) and recording (a
// log of every request, tagged, for MEMO's planner). Each forwards the stream-ordered overloads
// to the resource it wraps on the same stream.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "core/memory_resource.h"
#include "core/stream.h"

namespace memento {

// Counts the bytes live through it and the peak since the last reset_peak().
class TrackingResource final : public MemoryResource {
 public:
  explicit TrackingResource(MemoryResource* upstream) : upstream_(upstream) {}
  void* allocate(size_t bytes) override;
  void deallocate(void* ptr, size_t bytes) noexcept override;
  void* allocate(size_t bytes, StreamView stream) override;
  void deallocate(void* ptr, size_t bytes, StreamView stream) noexcept override;
  Device device() const override { return upstream_->device(); }
  std::string name() const override { return "tracking(" + upstream_->name() + ")"; }

  size_t current_bytes() const { return current_.load(); }
  size_t peak_bytes() const { return peak_.load(); }
  void reset_peak() { peak_.store(current_.load()); }

 private:
  MemoryResource* upstream_;
  std::atomic<size_t> current_{0};
  std::atomic<size_t> peak_{0};
};

// Refuses any allocation that would take the live bytes through it past `budget` with an
// OutOfMemoryError naming the budget, the live bytes and the request.
class LimitResource final : public MemoryResource {
 public:
  // `what` names the budget in the error (e.g. the config key that set it).
  LimitResource(MemoryResource* upstream, size_t budget, std::string what = "memory budget")
      : upstream_(upstream), budget_(budget), what_(std::move(what)) {}
  void* allocate(size_t bytes) override;
  void deallocate(void* ptr, size_t bytes) noexcept override;
  void* allocate(size_t bytes, StreamView stream) override;
  void deallocate(void* ptr, size_t bytes, StreamView stream) noexcept override;
  Device device() const override { return upstream_->device(); }
  std::string name() const override { return "limit(" + upstream_->name() + ")"; }
  size_t budget() const { return budget_; }
  size_t current_bytes() const { return current_.load(); }

 private:
  void charge(size_t bytes);  // counts `bytes` as live, or throws OutOfMemoryError

  MemoryResource* upstream_;
  size_t budget_;
  std::string what_;
  std::atomic<size_t> current_{0};
};

// Allocation tags: short labels ("activations", "optimizer") that callers put on what they
// allocate. A tag is interned once into a process-wide table (thread-safe) and named by its id;
// id 0 is the empty tag.
uint32_t intern_allocation_tag(std::string_view tag);
std::string allocation_tag_name(uint32_t id);
// The tag of this thread's allocations now: the innermost ScopedAllocationTag's, else 0.
uint32_t current_allocation_tag();

// Labels this thread's allocations within the scope (nests; restores the outer tag on exit).
// Costs one table look-up at construction, nothing per allocation.
class ScopedAllocationTag {
 public:
  explicit ScopedAllocationTag(std::string_view tag);
  ~ScopedAllocationTag();
  ScopedAllocationTag(const ScopedAllocationTag&) = delete;
  ScopedAllocationTag& operator=(const ScopedAllocationTag&) = delete;

 private:
  uint32_t previous_;
};

// One allocation request through a RecordingResource. Allocations and frees share one clock, so
// sorting the records' `order` and `free_order` together replays the run's requests in order.
struct AllocationRecord {
  static constexpr uint64_t kLive = std::numeric_limits<uint64_t>::max();

  uint64_t order = 0;           // the allocation's tick
  uint64_t free_order = kLive;  // the matching free's tick; kLive while the block is live
  size_t bytes = 0;
  uint32_t tag = 0;        // allocation_tag_name(tag)
  Device device;           // the stream's device ...
  void* stream = nullptr;  // ... and handle (null: allocate(bytes), no stream)
};

// Logs every request to the resource it wraps: size, tag, order and the matching free. Thread-
// safe (one mutex). A free matches its allocation by pointer; null pointers (kMeta, the dry run,
// and zero-byte blocks) match the most recent live null block of the same size, which keeps the
// byte timeline exact (two same-size blocks may swap identities). A zero-byte request is logged
// as freed at once (tensors never free zero bytes). Frees of blocks it never handed out are
// forwarded and counted.
class RecordingResource final : public MemoryResource {
 public:
  explicit RecordingResource(MemoryResource* upstream) : upstream_(upstream) {}
  void* allocate(size_t bytes) override;
  void deallocate(void* ptr, size_t bytes) noexcept override;
  void* allocate(size_t bytes, StreamView stream) override;
  void deallocate(void* ptr, size_t bytes, StreamView stream) noexcept override;
  Device device() const override { return upstream_->device(); }
  std::string name() const override { return "recording(" + upstream_->name() + ")"; }

  // The log so far, in allocation order (a copy).
  std::vector<AllocationRecord> records() const;
  // Drops the records of freed blocks; live ones stay, so their frees still match. Call it at a
  // step boundary to keep one step's log.
  void clear_freed();
  uint64_t unmatched_frees() const;
  // The bytes this resource holds for its log and its index of live blocks (capacity included;
  // the hash index is estimated from its node and bucket counts).
  size_t overhead_bytes() const;

 private:
  void record_allocation(void* ptr, size_t bytes, Device device, void* stream);
  void record_free(void* ptr, size_t bytes) noexcept;

  MemoryResource* upstream_;
  mutable std::mutex mutex_;
  uint64_t clock_ = 0;
  uint64_t unmatched_frees_ = 0;
  std::vector<AllocationRecord> records_;
  std::unordered_map<void*, size_t> live_;                     // pointer -> index in records_
  std::unordered_map<size_t, std::vector<size_t>> live_null_;  // bytes -> indices, oldest first
};

// "1.50 GiB", "12.0 MiB", "512 B".
std::string format_bytes(double bytes);

}  // namespace memento
