// Memory resources that wrap another: tracking (current and peak bytes, per tag) and limiting
// (a byte budget enforced on every allocation, so tests can prove a memory bound on the CPU).
#pragma once

#include <atomic>
#include <cstddef>
#include <string>
#include <utility>

#include "core/memory_resource.h"

namespace memento {

// Counts the bytes live through it and the peak since the last reset_peak().
class TrackingResource final : public MemoryResource {
 public:
  explicit TrackingResource(MemoryResource* upstream) : upstream_(upstream) {}
  void* allocate(size_t bytes) override;
  void deallocate(void* ptr, size_t bytes) noexcept override;
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
  Device device() const override { return upstream_->device(); }
  std::string name() const override { return "limit(" + upstream_->name() + ")"; }
  size_t budget() const { return budget_; }
  size_t current_bytes() const { return current_.load(); }

 private:
  MemoryResource* upstream_;
  size_t budget_;
  std::string what_;
  std::atomic<size_t> current_{0};
};

// "1.50 GiB", "12.0 MiB", "512 B".
std::string format_bytes(double bytes);

}  // namespace memento
