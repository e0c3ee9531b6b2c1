// A thread-safe cache from a pre-tokenised chunk (its bytes) to its token ids, shared by the
// BPE tokenizers. Split into shards with one mutex each so that tokenizer threads rarely wait;
// the ids are computed outside the lock.
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace memento {

class ChunkCache {
 public:
  // Chunks longer than this are encoded every time (rare, and they would crowd the cache).
  static constexpr size_t kMaxChunkBytes = 256;

  // Appends the ids of `chunk` to out, computing them with encode(chunk) on a miss.
  template <typename Encode>
  void append(std::string_view chunk, std::vector<int32_t>& out, const Encode& encode) {
    if (chunk.size() > kMaxChunkBytes) {
      const std::vector<int32_t> ids = encode(chunk);
      out.insert(out.end(), ids.begin(), ids.end());
      return;
    }
    const size_t h = std::hash<std::string_view>{}(chunk);
    Shard& shard = shards_[h % kShards];
    {
      std::lock_guard<std::mutex> lock(shard.mutex);
      auto it = shard.map.find(chunk);
      if (it != shard.map.end()) {
        out.insert(out.end(), it->second.begin(), it->second.end());
        return;
      }
    }
    std::vector<int32_t> ids = encode(chunk);
    out.insert(out.end(), ids.begin(), ids.end());
    std::lock_guard<std::mutex> lock(shard.mutex);
    // Dropping a full shard bounds the cache at kShards * kMaxEntriesPerShard = 256k chunks
    // of <= kMaxChunkBytes (tens of MB at most); a table much larger than the CPU caches
    // costs more in memory latency than re-encoding saves.
    if (shard.map.size() >= kMaxEntriesPerShard) shard.map.clear();
    shard.map.emplace(std::string(chunk), std::move(ids));
  }

 private:
  static constexpr size_t kShards = 64;
  static constexpr size_t kMaxEntriesPerShard = size_t{1} << 12;

  // Lets a shard be searched with a string_view, without building a std::string.
  struct Hash {
    using is_transparent = void;
    size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
  };
  struct Shard {
    std::mutex mutex;
    std::unordered_map<std::string, std::vector<int32_t>, Hash, std::equal_to<>> map;
  };
  std::array<Shard, kShards> shards_;
};

}  // namespace memento
