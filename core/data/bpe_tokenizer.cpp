#include "core/data/bpe_tokenizer.h"

#include <fstream>
#include <limits>
#include <queue>
#include <sstream>
#include <unordered_map>

#include "core/data/chunk_cache.h"
#include "core/data/mapped_file.h"
#include "core/error.h"

namespace memento {
namespace {

constexpr int kFirstMerge = BpeTokenizer::kEot + 1;
// Long runs (a line of dashes, a huge number) are cut so per-chunk BPE stays cheap.
constexpr size_t kMaxChunkBytes = 128;
constexpr int kProgressEvery = 64;
constexpr std::string_view kFileMagic = "memento-bpe";

enum class ByteClass { kLetter, kDigit, kNewline, kSpace, kOther };

ByteClass classify(unsigned char c) {
  if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c >= 0x80) return ByteClass::kLetter;
  if (c >= '0' && c <= '9') return ByteClass::kDigit;
  if (c == '\n' || c == '\r') return ByteClass::kNewline;
  if (c == ' ' || c == '\t' || c == '\v' || c == '\f') return ByteClass::kSpace;
  return ByteClass::kOther;
}

// Length of the English contraction starting at text[i] (an apostrophe), or 0.
size_t contraction_length(std::string_view text, size_t i) {
  const std::string_view rest = text.substr(i + 1);
  for (std::string_view two : {"re", "ve", "ll"})
    if (rest.starts_with(two)) return 3;
  if (!rest.empty() && (rest[0] == 's' || rest[0] == 't' || rest[0] == 'm' || rest[0] == 'd'))
    return 2;
  return 0;
}

uint64_t pair_key(int32_t a, int32_t b) {
  return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
}

// Merges every non-overlapping (a, b) in word, left to right, into z.
void merge_in_place(std::vector<int32_t>& word, int32_t a, int32_t b, int32_t z) {
  size_t out = 0;
  for (size_t i = 0; i < word.size(); ++i) {
    if (i + 1 < word.size() && word[i] == a && word[i + 1] == b) {
      word[out++] = z;
      ++i;
    } else {
      word[out++] = word[i];
    }
  }
  word.resize(out);
}

struct HeapEntry {
  int64_t count;
  uint64_t pair;
  // Highest count first; ties go to the smallest pair so training is deterministic.
  bool operator<(const HeapEntry& o) const {
    return count != o.count ? count < o.count : pair > o.pair;
  }
};

}  // namespace

struct BpeTokenizer::Cache {
  std::unordered_map<uint64_t, int32_t> rank;  // pair -> merge index
  ChunkCache chunks;
};

BpeTokenizer::BpeTokenizer() : cache_(std::make_unique<Cache>()) {
  for (int b = 0; b < kNumBytes; ++b) pieces_.emplace_back(1, static_cast<char>(b));
  pieces_.emplace_back(kEotText);
}
BpeTokenizer::BpeTokenizer(BpeTokenizer&&) noexcept = default;
BpeTokenizer& BpeTokenizer::operator=(BpeTokenizer&&) noexcept = default;
BpeTokenizer::~BpeTokenizer() = default;

BpeTokenizer BpeTokenizer::bytes() { return BpeTokenizer(); }

void BpeTokenizer::add_merge(int32_t a, int32_t b) {
  cache_->rank.emplace(pair_key(a, b), static_cast<int32_t>(merges_.size()));
  merges_.emplace_back(a, b);
  pieces_.push_back(pieces_[a] + pieces_[b]);
}

std::vector<std::string_view> BpeTokenizer::split_chunks(std::string_view text) {
  std::vector<std::string_view> chunks;
  const size_t n = text.size();
  auto cls = [&](size_t i) { return classify(static_cast<unsigned char>(text[i])); };
  // Extends i over bytes of class c, up to the chunk cap counted from start.
  auto run = [&](size_t start, size_t i, ByteClass c) {
    while (i < n && cls(i) == c && i - start < kMaxChunkBytes) ++i;
    return i;
  };
  size_t i = 0;
  while (i < n) {
    size_t start = i;
    const ByteClass c = cls(i);
    if (text[i] == '\'' && contraction_length(text, i) > 0) {
      i += contraction_length(text, i);
    } else if (c == ByteClass::kSpace) {
      size_t j = run(start, i, c);
      const bool joins_word = j < n && cls(j) != ByteClass::kSpace &&
                              cls(j) != ByteClass::kNewline && text[j - 1] == ' ';
      if (joins_word) {
        if (j - 1 > start) chunks.push_back(text.substr(start, j - 1 - start));
        start = j - 1;
        j = run(start, j, cls(j));
      }
      i = j;
    } else {
      i = run(start, i, c);
    }
    chunks.push_back(text.substr(start, i - start));
  }
  return chunks;
}

BpeTokenizer BpeTokenizer::train(const std::vector<std::string>& documents, int vocab_size,
                                 std::function<void(int done, int total)> progress) {
  MEMENTO_EXPECT(vocab_size >= kFirstMerge, DataError, "tokenizer vocab_size ", vocab_size,
                 " is too small: needs at least ", kFirstMerge, " (256 bytes + <|endoftext|>)");
  BpeTokenizer tok;
  const int total = vocab_size - kFirstMerge;
  if (progress) progress(0, total);

  // Unique chunks with their frequencies; views into `documents`, which outlive training.
  std::unordered_map<std::string_view, int64_t> freq;
  for (const std::string& doc : documents)
    for (std::string_view chunk : split_chunks(doc)) ++freq[chunk];
  std::vector<std::vector<int32_t>> words;
  std::vector<int64_t> counts;
  words.reserve(freq.size());
  for (const auto& [chunk, count] : freq) {
    if (chunk.size() < 2) continue;  // nothing to merge
    words.emplace_back(chunk.begin(), chunk.end());
    for (int32_t& t : words.back()) t = static_cast<uint8_t>(t);
    counts.push_back(count);
  }

  // Pair counts, the words each pair may occur in (a superset: stale entries are skipped),
  // and a lazy max-heap: an entry is live only while its count matches pair_count.
  std::unordered_map<uint64_t, int64_t> pair_count;
  std::unordered_map<uint64_t, std::vector<int32_t>> where;
  for (size_t w = 0; w < words.size(); ++w) {
    for (size_t k = 0; k + 1 < words[w].size(); ++k) {
      const uint64_t p = pair_key(words[w][k], words[w][k + 1]);
      pair_count[p] += counts[w];
      where[p].push_back(static_cast<int32_t>(w));
    }
  }
  std::priority_queue<HeapEntry> heap;
  for (const auto& [p, c] : pair_count) heap.push({c, p});

  std::vector<int64_t> visited(words.size(), -1);
  std::unordered_map<uint64_t, int64_t> delta;
  while (tok.num_merges() < total && !heap.empty()) {
    const HeapEntry top = heap.top();
    heap.pop();
    auto it = pair_count.find(top.pair);
    if (it == pair_count.end() || it->second != top.count) continue;  // stale entry
    const auto a = static_cast<int32_t>(top.pair >> 32);
    const auto b = static_cast<int32_t>(top.pair & 0xFFFFFFFFu);
    const int32_t z = kFirstMerge + tok.num_merges();
    const int64_t merge_index = tok.num_merges();
    tok.add_merge(a, b);

    // (a, b) never forms again once merged: later merges only make new ids.
    const std::vector<int32_t> holders = std::move(where[top.pair]);
    where.erase(top.pair);
    delta.clear();
    for (int32_t w : holders) {
      if (visited[w] == merge_index) continue;
      visited[w] = merge_index;
      std::vector<int32_t>& word = words[w];
      const int64_t c = counts[w];
      for (size_t k = 0; k + 1 < word.size(); ++k) delta[pair_key(word[k], word[k + 1])] -= c;
      merge_in_place(word, a, b, z);
      for (size_t k = 0; k + 1 < word.size(); ++k) {
        const uint64_t p = pair_key(word[k], word[k + 1]);
        delta[p] += c;
        if (word[k] == z || word[k + 1] == z) where[p].push_back(w);
      }
    }
    for (const auto& [p, d] : delta) {
      if (d == 0) continue;
      int64_t& count = pair_count[p];
      count += d;
      if (count > 0) {
        heap.push({count, p});
      } else {
        pair_count.erase(p);
      }
    }
    if (progress && tok.num_merges() % kProgressEvery == 0) progress(tok.num_merges(), total);
  }
  if (progress) progress(tok.num_merges(), total);
  return tok;
}

std::vector<int32_t> BpeTokenizer::encode_chunk(std::string_view chunk) const {
  std::vector<int32_t> word(chunk.begin(), chunk.end());
  for (int32_t& t : word) t = static_cast<uint8_t>(t);
  // Apply the lowest-ranked (earliest learned) merge present until none applies, which
  // reproduces the order training applied them in.
  while (word.size() > 1) {
    int32_t best = std::numeric_limits<int32_t>::max();
    for (size_t k = 0; k + 1 < word.size(); ++k) {
      auto it = cache_->rank.find(pair_key(word[k], word[k + 1]));
      if (it != cache_->rank.end() && it->second < best) best = it->second;
    }
    if (best == std::numeric_limits<int32_t>::max()) break;
    const auto [a, b] = merges_[best];
    merge_in_place(word, a, b, kFirstMerge + best);
  }
  return word;
}

std::vector<int32_t> BpeTokenizer::encode(std::string_view text) const {
  std::vector<int32_t> ids;
  ids.reserve(text.size() / 3 + 1);
  for (std::string_view chunk : split_chunks(text)) {
    if (merges_.empty() || chunk.size() == 1) {
      for (char ch : chunk) ids.push_back(static_cast<uint8_t>(ch));
      continue;
    }
    cache_->chunks.append(chunk, ids, [this](std::string_view c) { return encode_chunk(c); });
  }
  return ids;
}

std::string BpeTokenizer::decode(const std::vector<int32_t>& ids) const {
  std::string text;
  for (int32_t id : ids) {
    MEMENTO_EXPECT(id >= 0 && id < vocab_size(), DataError, "token id ", id,
                   " is outside the tokenizer's vocabulary [0, ", vocab_size(), ")");
    text += pieces_[static_cast<size_t>(id)];
  }
  return text;
}

std::string BpeTokenizer::serialize() const {
  std::ostringstream os;
  os << kFileMagic << " 1 merges " << merges_.size() << "\n";
  for (const auto& [a, b] : merges_) os << a << ' ' << b << '\n';
  return os.str();
}

void BpeTokenizer::save(const std::string& path) const { write_file_atomically(path, serialize()); }

BpeTokenizer BpeTokenizer::load(const std::string& path) {
  std::ifstream file(path, std::ios::binary);
  MEMENTO_EXPECT(file.good(), DataError, path, ": cannot open tokenizer file");
  std::ostringstream text;
  text << file.rdbuf();
  return parse(text.str(), path);
}

BpeTokenizer BpeTokenizer::parse(std::string_view text, const std::string& path) {
  std::istringstream in{std::string(text)};
  std::string line;
  int line_no = 1;
  std::string magic, merges_word, extra;
  int version = 0;
  int64_t n = -1;
  MEMENTO_EXPECT(std::getline(in, line), DataError, path, ":1: empty file, expected \"", kFileMagic,
                 " 1 merges M\"");
  {
    std::istringstream header(line);
    const bool ok = (header >> magic >> version >> merges_word >> n) && !(header >> extra) &&
                    magic == kFileMagic && version == 1 && merges_word == "merges" && n >= 0 &&
                    n <= std::numeric_limits<int32_t>::max() - kFirstMerge;
    MEMENTO_EXPECT(ok, DataError, path, ":1: expected \"", kFileMagic,
                   " 1 merges M\" (a memento BPE tokenizer), found \"", line, "\"");
  }
  BpeTokenizer tok;
  while (std::getline(in, line)) {
    ++line_no;
    if (line.empty() && in.peek() == std::char_traits<char>::eof()) break;
    const int64_t next = kFirstMerge + tok.num_merges();
    MEMENTO_EXPECT(tok.num_merges() < n, DataError, path, ":", line_no, ": extra line after the ",
                   n, " merges announced on line 1");
    std::istringstream fields(line);
    int64_t a = -1, b = -1;
    const bool ok = (fields >> a >> b) && !(fields >> extra) && a >= 0 && b >= 0 && a < next &&
                    b < next && a != kEot && b != kEot;
    MEMENTO_EXPECT(ok, DataError, path, ":", line_no, ": expected \"A B\" with token ids below ",
                   next, " other than ", kEot, ", found \"", line, "\"");
    tok.add_merge(static_cast<int32_t>(a), static_cast<int32_t>(b));
  }
  MEMENTO_EXPECT(tok.num_merges() == n, DataError, path, ":", line_no, ": file ends after ",
                 tok.num_merges(), " merges, line 1 announced ", n);
  return tok;
}

}  // namespace memento
