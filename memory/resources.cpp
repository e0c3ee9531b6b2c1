#include "memory/resources.h"

#include <cstdio>
#include <deque>
#include <new>

#include "core/error.h"

namespace memento {

void* TrackingResource::allocate(size_t bytes) {
  void* p = upstream_->allocate(bytes);
  const size_t now = current_.fetch_add(bytes) + bytes;
  size_t peak = peak_.load();
  while (now > peak && !peak_.compare_exchange_weak(peak, now)) {
  }
  return p;
}

void TrackingResource::deallocate(void* ptr, size_t bytes) noexcept {
  upstream_->deallocate(ptr, bytes);
  current_.fetch_sub(bytes);
}

void* TrackingResource::allocate(size_t bytes, StreamView stream) {
  void* p = upstream_->allocate(bytes, stream);
  const size_t now = current_.fetch_add(bytes) + bytes;
  size_t peak = peak_.load();
  while (now > peak && !peak_.compare_exchange_weak(peak, now)) {
  }
  return p;
}

void TrackingResource::deallocate(void* ptr, size_t bytes, StreamView stream) noexcept {
  // Counted as free now, when the owner lets go, though the bytes come back in stream order.
  upstream_->deallocate(ptr, bytes, stream);
  current_.fetch_sub(bytes);
}

void LimitResource::charge(size_t bytes) {
  const size_t before = current_.fetch_add(bytes);
  if (before + bytes > budget_) {
    current_.fetch_sub(bytes);
    throw OutOfMemoryError(detail::concat(what_, " exceeded: ", format_bytes(bytes),
                                          " requested with ", format_bytes(before),
                                          " live; budget ", format_bytes(budget_)));
  }
}

void* LimitResource::allocate(size_t bytes) {
  charge(bytes);
  try {
    return upstream_->allocate(bytes);
  } catch (...) {
    current_.fetch_sub(bytes);
    throw;
  }
}

void LimitResource::deallocate(void* ptr, size_t bytes) noexcept {
  upstream_->deallocate(ptr, bytes);
  current_.fetch_sub(bytes);
}

void* LimitResource::allocate(size_t bytes, StreamView stream) {
  charge(bytes);
  try {
    return upstream_->allocate(bytes, stream);
  } catch (...) {
    current_.fetch_sub(bytes);
    throw;
  }
}

void LimitResource::deallocate(void* ptr, size_t bytes, StreamView stream) noexcept {
  upstream_->deallocate(ptr, bytes, stream);
  current_.fetch_sub(bytes);
}

namespace {
// The process-wide tag table. A deque keeps names in place as it grows; tags are few.
struct TagTable {
  std::mutex mutex;
  std::deque<std::string> names{std::string()};
  std::unordered_map<std::string, uint32_t> ids{{std::string(), 0}};
};
TagTable& tag_table() {
  static TagTable& table = *new TagTable;  // immortal: tags may be named in static destructors
  return table;
}
thread_local uint32_t t_current_tag = 0;
}  // namespace

uint32_t intern_allocation_tag(std::string_view tag) {
  TagTable& table = tag_table();
  const std::lock_guard<std::mutex> lock(table.mutex);
  const auto [it, inserted] =
      table.ids.try_emplace(std::string(tag), static_cast<uint32_t>(table.names.size()));
  if (inserted) table.names.emplace_back(tag);
  return it->second;
}

std::string allocation_tag_name(uint32_t id) {
  TagTable& table = tag_table();
  const std::lock_guard<std::mutex> lock(table.mutex);
  MEMENTO_EXPECT(id < table.names.size(), Error, "no allocation tag ", id);
  return table.names[id];
}

uint32_t current_allocation_tag() { return t_current_tag; }

ScopedAllocationTag::ScopedAllocationTag(std::string_view tag)
    : previous_(std::exchange(t_current_tag, intern_allocation_tag(tag))) {}

ScopedAllocationTag::~ScopedAllocationTag() { t_current_tag = previous_; }

void* RecordingResource::allocate(size_t bytes) {
  void* p = upstream_->allocate(bytes);
  try {
    record_allocation(p, bytes, upstream_->device(), nullptr);
  } catch (...) {  // no memory for the log: the request fails as a whole
    upstream_->deallocate(p, bytes);
    throw;
  }
  return p;
}

void* RecordingResource::allocate(size_t bytes, StreamView stream) {
  void* p = upstream_->allocate(bytes, stream);
  try {
    record_allocation(p, bytes, stream.device(), stream.handle());
  } catch (...) {
    upstream_->deallocate(p, bytes, stream);
    throw;
  }
  return p;
}

void RecordingResource::deallocate(void* ptr, size_t bytes) noexcept {
  record_free(ptr, bytes);
  upstream_->deallocate(ptr, bytes);
}

void RecordingResource::deallocate(void* ptr, size_t bytes, StreamView stream) noexcept {
  record_free(ptr, bytes);
  upstream_->deallocate(ptr, bytes, stream);
}

void RecordingResource::record_allocation(void* ptr, size_t bytes, Device device, void* stream) {
  const std::lock_guard<std::mutex> lock(mutex_);
  AllocationRecord record;
  record.order = clock_;
  record.bytes = bytes;
  record.tag = t_current_tag;
  record.device = device;
  record.stream = stream;
  if (bytes == 0) record.free_order = record.order;
  const size_t index = records_.size();
  records_.push_back(record);  // may throw: nothing has changed yet
  try {
    if (bytes != 0 && ptr == nullptr) live_null_[bytes].push_back(index);
    if (bytes != 0 && ptr != nullptr) live_.emplace(ptr, index);
  } catch (...) {
    records_.pop_back();
    throw;
  }
  ++clock_;
}

void RecordingResource::record_free(void* ptr, size_t bytes) noexcept {
  if (bytes == 0) return;
  const std::lock_guard<std::mutex> lock(mutex_);
  size_t index = records_.size();
  if (ptr != nullptr) {
    if (auto it = live_.find(ptr); it != live_.end()) {
      index = it->second;
      live_.erase(it);
    }
  } else if (auto it = live_null_.find(bytes); it != live_null_.end() && !it->second.empty()) {
    index = it->second.back();
    it->second.pop_back();
  }
  if (index == records_.size()) {
    ++unmatched_frees_;
    return;
  }
  records_[index].free_order = clock_++;
}

std::vector<AllocationRecord> RecordingResource::records() const {
  const std::lock_guard<std::mutex> lock(mutex_);
  return records_;
}

void RecordingResource::clear_freed() {
  const std::lock_guard<std::mutex> lock(mutex_);
  std::vector<size_t> new_index(records_.size(), 0);
  std::vector<AllocationRecord> kept;
  for (size_t i = 0; i < records_.size(); ++i) {
    if (records_[i].free_order != AllocationRecord::kLive) continue;
    new_index[i] = kept.size();
    kept.push_back(records_[i]);
  }
  for (auto& [ptr, index] : live_) index = new_index[index];
  for (auto& [bytes, indices] : live_null_)
    for (size_t& index : indices) index = new_index[index];
  records_ = std::move(kept);
}

uint64_t RecordingResource::unmatched_frees() const {
  const std::lock_guard<std::mutex> lock(mutex_);
  return unmatched_frees_;
}

size_t RecordingResource::overhead_bytes() const {
  const std::lock_guard<std::mutex> lock(mutex_);
  // A node of a std::unordered_map holds the pair and a next pointer (libstdc++ caches no hash
  // for pointer or integer keys).
  const size_t live_node = sizeof(void*) + sizeof(std::pair<void* const, size_t>);
  const size_t null_node = sizeof(void*) + sizeof(std::pair<const size_t, std::vector<size_t>>);
  size_t bytes = sizeof(*this) + records_.capacity() * sizeof(AllocationRecord) +
                 live_.size() * live_node + live_.bucket_count() * sizeof(void*) +
                 live_null_.size() * null_node + live_null_.bucket_count() * sizeof(void*);
  for (const auto& [size, indices] : live_null_) bytes += indices.capacity() * sizeof(size_t);
  return bytes;
}

std::string format_bytes(double bytes) {
  static constexpr const char* kUnits[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int unit = 0;
  while (bytes >= 1024.0 && unit < 4) {
    bytes /= 1024.0;
    ++unit;
  }
  char buf[32];
  if (unit == 0) {
    std::snprintf(buf, sizeof(buf), "%.0f B", bytes);
  } else {
    std::snprintf(buf, sizeof(buf), "%.2f %s", bytes, kUnits[unit]);
  }
  return buf;
}

}  // namespace memento
