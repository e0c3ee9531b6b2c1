#include "core/data/hf_tokenizer.h"

#include <algorithm>
#include <fstream>
#include <nlohmann/json.hpp>
#include <queue>
#include <sstream>
#include <unordered_map>

#include "core/data/chunk_cache.h"
#include "core/data/hf_pretokenizer.h"
#include "core/error.h"

namespace memento {
namespace {

using nlohmann::json;

// Ids beyond this are taken for a corrupt file rather than allocated for.
constexpr int64_t kMaxVocab = int64_t{1} << 26;
// GPT-2's mapping uses code points below 256 + 68.
constexpr uint32_t kMappedCodePoints = 324;

uint64_t pair_key(int32_t a, int32_t b) {
  return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
}

std::string utf8(uint32_t cp) {
  std::string s;
  if (cp < 0x80) {
    s += static_cast<char>(cp);
  } else if (cp < 0x800) {
    s += static_cast<char>(0xC0 | (cp >> 6));
    s += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    s += static_cast<char>(0xE0 | (cp >> 12));
    s += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    s += static_cast<char>(0x80 | (cp & 0x3F));
  }
  return s;
}

// The code point of the UTF-8 character at s[i] (advancing i), or -1 when it is malformed.
int64_t next_code_point(std::string_view s, size_t& i) {
  const auto c = static_cast<unsigned char>(s[i]);
  const int len = c < 0x80           ? 1
                  : (c >> 5) == 0x6  ? 2
                  : (c >> 4) == 0xE  ? 3
                  : (c >> 3) == 0x1E ? 4
                                     : 0;
  if (len == 0 || i + len > s.size()) {
    ++i;
    return -1;
  }
  uint32_t cp = len == 1 ? c : c & (0x7F >> len);
  for (int k = 1; k < len; ++k) cp = (cp << 6) | (static_cast<unsigned char>(s[i + k]) & 0x3F);
  i += len;
  return cp;
}

// byte -> code point, GPT-2's encoder.py bytes_to_unicode().
const std::array<uint32_t, 256>& byte_code_points() {
  static const std::array<uint32_t, 256> table = [] {
    std::array<uint32_t, 256> t{};
    uint32_t n = 0;
    for (uint32_t b = 0; b < 256; ++b) {
      const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
      t[b] = printable ? b : 256 + n++;
    }
    return t;
  }();
  return table;
}

// code point -> byte + 1 (0: not a mapped character).
const std::array<int, kMappedCodePoints>& code_point_bytes() {
  static const std::array<int, kMappedCodePoints> table = [] {
    std::array<int, kMappedCodePoints> t{};
    for (int b = 0; b < 256; ++b) t[byte_code_points()[b]] = b + 1;
    return t;
  }();
  return table;
}

// The bytes a vocabulary entry stands for; false (and its raw UTF-8) when some character is
// outside GPT-2's mapping, which is what Hugging Face's ByteLevel decoder then emits.
bool unmap_token(std::string_view token, std::string& bytes) {
  bytes.clear();
  for (size_t i = 0; i < token.size();) {
    const int64_t cp = next_code_point(token, i);
    if (cp < 0 || cp >= kMappedCodePoints || code_point_bytes()[cp] == 0) {
      bytes.assign(token);
      return false;
    }
    bytes += static_cast<char>(code_point_bytes()[cp] - 1);
  }
  return true;
}

bool is_space(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

const json& member(const json& object, const char* key, const std::string& where,
                   const std::string& path) {
  MEMENTO_EXPECT(object.is_object(), DataError, where, ": ", path, " must be an object, found ",
                 object.type_name());
  auto it = object.find(key);
  MEMENTO_EXPECT(it != object.end(), DataError, where, ": ", path.empty() ? "" : path + ".", key,
                 " is missing");
  return *it;
}

bool flag(const json& object, const char* key, const std::string& where, const std::string& path) {
  auto it = object.find(key);
  if (it == object.end() || it->is_null()) return false;
  MEMENTO_EXPECT(it->is_boolean(), DataError, where, ": ", path, ".", key,
                 " must be true or false, found ", it->dump());
  return it->get<bool>();
}

int32_t id_value(const json& v, const std::string& where, const std::string& key) {
  MEMENTO_EXPECT(v.is_number_integer() && v.get<int64_t>() >= 0 && v.get<int64_t>() < kMaxVocab,
                 DataError, where, ": ", key, " must be a token id in [0, ", kMaxVocab, "), found ",
                 v.dump());
  return static_cast<int32_t>(v.get<int64_t>());
}

// A model option must be absent, null or the given harmless value.
void expect_unset(const json& model, const char* key, const json& harmless,
                  const std::string& where, const std::string& why) {
  auto it = model.find(key);
  if (it == model.end() || it->is_null() || *it == harmless) return;
  throw DataError(
      detail::concat(where, ": model.", key, " = ", it->dump(), " is not supported (", why, ")"));
}

void check_decoder(const json& decoder, const std::string& where, const std::string& key) {
  if (decoder.is_null()) return;
  const json& type = member(decoder, "type", where, key);
  if (type == "ByteLevel") return;
  if (type == "Sequence") {
    const json& list = member(decoder, "decoders", where, key);
    for (size_t i = 0; i < list.size(); ++i)
      check_decoder(list[i], where, detail::concat(key, ".decoders[", i, "]"));
    return;
  }
  throw DataError(detail::concat(where, ": ", key, ".type ", type.dump(),
                                 " is not supported (a byte-level BPE decodes with ByteLevel)"));
}

// The special tokens a TemplateProcessing post_processor puts first and last in "single".
void template_ends(const json& pp, std::string& first, std::string& last) {
  if (!pp.is_object() || !pp.contains("type")) return;
  if (pp["type"] == "Sequence" && pp.contains("processors") && pp["processors"].is_array()) {
    for (const json& p : pp["processors"]) template_ends(p, first, last);
    return;
  }
  if (pp["type"] != "TemplateProcessing" || !pp.contains("single") || !pp["single"].is_array() ||
      pp["single"].empty())
    return;
  auto special = [](const json& item) -> std::string {
    if (item.is_object() && item.contains("SpecialToken") && item["SpecialToken"].contains("id") &&
        item["SpecialToken"]["id"].is_string())
      return item["SpecialToken"]["id"].get<std::string>();
    return "";
  };
  first = special(pp["single"].front());
  last = special(pp["single"].back());
}

}  // namespace

struct HfBpeTokenizer::Impl {
  std::unordered_map<uint64_t, std::pair<int32_t, int32_t>> merges;  // (a, b) -> (rank, ab)
  std::unordered_map<std::string, int32_t> word_ids;  // bytes -> id, for ignore_merges
  Normalizer normalizer;
  PreTokenizer pre_tokenizer;
  ChunkCache cache;
};

HfBpeTokenizer::HfBpeTokenizer() : impl_(std::make_unique<Impl>()) {}
HfBpeTokenizer::~HfBpeTokenizer() = default;

const std::array<std::string, 256>& HfBpeTokenizer::byte_to_unicode() {
  static const std::array<std::string, 256> table = [] {
    std::array<std::string, 256> t;
    for (int b = 0; b < 256; ++b) t[b] = utf8(byte_code_points()[b]);
    return t;
  }();
  return table;
}

std::string HfBpeTokenizer::bytes_to_unicode(std::string_view bytes) {
  std::string s;
  for (char c : bytes) s += byte_to_unicode()[static_cast<unsigned char>(c)];
  return s;
}

std::unique_ptr<HfBpeTokenizer> HfBpeTokenizer::load(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  MEMENTO_EXPECT(in.good(), DataError, path, ": cannot open tokenizer file");
  std::ostringstream os;
  os << in.rdbuf();
  return parse(os.str(), path);
}

std::unique_ptr<HfBpeTokenizer> HfBpeTokenizer::parse(std::string_view text,
                                                      const std::string& where) {
  json root;
  try {
    root = json::parse(text.begin(), text.end());
  } catch (const json::exception& e) {
    throw DataError(detail::concat(where, ": not valid JSON (a tokenizer.json): ", e.what()));
  }
  MEMENTO_EXPECT(root.is_object(), DataError, where, ": expected a JSON object (tokenizer.json)");
  std::unique_ptr<HfBpeTokenizer> tok(new HfBpeTokenizer());
  tok->source_ = where;
  const json& model = member(root, "model", where, "");
  const bool is_bpe = model.contains("type") ? model["type"] == "BPE" : model.contains("merges");
  MEMENTO_EXPECT(is_bpe, DataError, where, ": model.type ",
                 model.contains("type") ? model["type"].dump() : std::string("(none)"),
                 " is not supported: only byte-level BPE tokenizer.json files (GPT-2, Llama 3, "
                 "Qwen) are; for a SentencePiece model pass its tokenizer.model");
  expect_unset(model, "dropout", 0.0, where, "BPE dropout is for training a tokenizer");
  expect_unset(model, "byte_fallback", false, where,
               "a SentencePiece-style BPE; pass the model's tokenizer.model instead");
  expect_unset(model, "continuing_subword_prefix", "", where, "not a byte-level BPE");
  expect_unset(model, "end_of_word_suffix", "", where, "not a byte-level BPE");
  if (model.contains("ignore_merges") && !model["ignore_merges"].is_null()) {
    MEMENTO_EXPECT(model["ignore_merges"].is_boolean(), DataError, where,
                   ": model.ignore_merges must be true or false");
    tok->ignore_merges_ = model["ignore_merges"].get<bool>();
  }

  // Vocabulary (GPT-2-mapped strings) and added tokens.
  const json& vocab = member(model, "vocab", where, "model");
  MEMENTO_EXPECT(vocab.is_object(), DataError, where, ": model.vocab must be an object");
  std::unordered_map<std::string, int32_t> ids;
  ids.reserve(vocab.size());
  int64_t max_id = -1;
  for (const auto& [token, value] : vocab.items()) {
    const int32_t id = id_value(value, where, "model.vocab[" + json(token).dump() + "]");
    ids.emplace(token, id);
    max_id = std::max<int64_t>(max_id, id);
  }
  const json empty_list = json::array();
  const json& added = root.contains("added_tokens") && !root["added_tokens"].is_null()
                          ? root["added_tokens"]
                          : empty_list;
  MEMENTO_EXPECT(added.is_array(), DataError, where, ": added_tokens must be a list");
  for (size_t i = 0; i < added.size(); ++i) {
    const std::string key = detail::concat("added_tokens[", i, "]");
    AddedToken a;
    a.id = id_value(member(added[i], "id", where, key), where, key + ".id");
    const json& content = member(added[i], "content", where, key);
    MEMENTO_EXPECT(content.is_string() && !content.get<std::string>().empty(), DataError, where,
                   ": ", key, ".content must be a non-empty string");
    a.content = content.get<std::string>();
    MEMENTO_EXPECT(!flag(added[i], "single_word", where, key), DataError, where, ": ", key,
                   ".single_word = true is not supported");
    a.lstrip = flag(added[i], "lstrip", where, key);
    a.rstrip = flag(added[i], "rstrip", where, key);
    max_id = std::max<int64_t>(max_id, a.id);
    tok->added_.push_back(std::move(a));
  }
  MEMENTO_EXPECT(max_id >= 0, DataError, where, ": model.vocab is empty");
  tok->pieces_.resize(static_cast<size_t>(max_id) + 1);
  tok->valid_.assign(static_cast<size_t>(max_id) + 1, false);
  std::string bytes;
  for (const auto& [token, id] : ids) {
    MEMENTO_EXPECT(!tok->valid_[id], DataError, where, ": model.vocab gives id ", id,
                   " to two tokens, one of them ", json(token).dump());
    tok->valid_[id] = true;
    const bool mapped = unmap_token(token, bytes);
    tok->pieces_[id] = bytes;
    if (mapped && tok->ignore_merges_) tok->impl_->word_ids.emplace(bytes, id);
  }
  for (size_t k = 0; k < tok->added_.size(); ++k) {
    const AddedToken& a = tok->added_[k];
    tok->pieces_[a.id] = a.content;
    tok->valid_[a.id] = true;
    tok->added_by_first_byte_[static_cast<unsigned char>(a.content[0])].push_back(
        static_cast<int>(k));
  }
  for (auto& list : tok->added_by_first_byte_) {
    std::stable_sort(list.begin(), list.end(), [&](int x, int y) {
      return tok->added_[x].content.size() > tok->added_[y].content.size();
    });
  }
  for (int b = 0; b < 256; ++b) {
    auto it = ids.find(byte_to_unicode()[b]);
    MEMENTO_EXPECT(it != ids.end(), DataError, where, ": model.vocab has no token for byte ", b,
                   " (", json(byte_to_unicode()[b]).dump(),
                   "); a byte-level BPE vocabulary holds all 256 bytes");
    tok->byte_ids_[b] = it->second;
  }

  // Merges, as "a b" strings or ["a", "b"] pairs; rank = position in the list.
  const json& merges = member(model, "merges", where, "model");
  MEMENTO_EXPECT(merges.is_array(), DataError, where, ": model.merges must be a list");
  auto lookup = [&](const std::string& token, size_t i) {
    auto it = ids.find(token);
    MEMENTO_EXPECT(it != ids.end(), DataError, where, ": model.merges[", i, "]: token ",
                   json(token).dump(), " is not in model.vocab");
    return it->second;
  };
  tok->impl_->merges.reserve(merges.size());
  for (size_t i = 0; i < merges.size(); ++i) {
    const json& m = merges[i];
    std::string a, b;
    if (m.is_string()) {
      const std::string s = m.get<std::string>();
      const size_t space = s.find(' ');
      MEMENTO_EXPECT(space != std::string::npos && s.find(' ', space + 1) == std::string::npos,
                     DataError, where, ": model.merges[", i, "] = ", m.dump(),
                     ", expected two tokens separated by one space");
      a = s.substr(0, space);
      b = s.substr(space + 1);
    } else {
      MEMENTO_EXPECT(m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string(),
                     DataError, where, ": model.merges[", i, "] = ", m.dump(),
                     ", expected \"a b\" or [\"a\", \"b\"]");
      a = m[0].get<std::string>();
      b = m[1].get<std::string>();
    }
    const int32_t left = lookup(a, i);
    const int32_t right = lookup(b, i);
    auto it = ids.find(a + b);
    MEMENTO_EXPECT(it != ids.end(), DataError, where, ": model.merges[", i, "] makes ",
                   json(a + b).dump(), ", which is not in model.vocab");
    tok->impl_->merges.insert_or_assign(pair_key(left, right),
                                        std::make_pair(static_cast<int32_t>(i), it->second));
  }
  tok->num_merges_ = static_cast<int64_t>(merges.size());

  tok->impl_->normalizer =
      Normalizer::from_json(root.contains("normalizer") ? root["normalizer"] : json(), where);
  tok->impl_->pre_tokenizer = PreTokenizer::from_json(
      root.contains("pre_tokenizer") ? root["pre_tokenizer"] : json(), where);
  check_decoder(root.contains("decoder") ? root["decoder"] : json(), where, "decoder");

  // BOS and EOS: the template's ends, else conventional names.
  auto find_token = [&](const std::string& content) -> std::optional<int32_t> {
    for (const AddedToken& a : tok->added_)
      if (a.content == content) return a.id;
    auto it = ids.find(content);
    if (it != ids.end()) return it->second;
    return std::nullopt;
  };
  std::string first, last;
  if (root.contains("post_processor")) template_ends(root["post_processor"], first, last);
  if (!first.empty()) tok->bos_ = find_token(first);
  if (!last.empty()) tok->eos_ = find_token(last);
  for (const char* name : {"<|begin_of_text|>", "<s>", "<|startoftext|>"})
    if (!tok->bos_) tok->bos_ = find_token(name);
  for (const char* name : {"<|end_of_text|>", "<|endoftext|>", "</s>", "<|im_end|>"})
    if (!tok->eos_) tok->eos_ = find_token(name);
  return tok;
}

std::vector<int32_t> HfBpeTokenizer::encode_word(std::string_view word) const {
  if (ignore_merges_) {
    auto it = impl_->word_ids.find(std::string(word));
    if (it != impl_->word_ids.end()) return {it->second};
  }
  const auto n = static_cast<int>(word.size());
  std::vector<int32_t> id(word.size());
  std::vector<int> prev(word.size()), next(word.size());
  for (int i = 0; i < n; ++i) {
    id[i] = byte_ids_[static_cast<unsigned char>(word[i])];
    prev[i] = i - 1;
    next[i] = i + 1 < n ? i + 1 : -1;
  }
  // Lowest rank first, then leftmost, as Hugging Face's Word::merge_all; entries go stale when
  // a neighbour merges and are skipped when their pair no longer has that rank.
  struct Entry {
    int32_t rank;
    int pos;
    bool operator<(const Entry& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
  };
  std::priority_queue<Entry> heap;
  auto push = [&](int i) {
    if (i < 0 || next[i] < 0) return;
    auto it = impl_->merges.find(pair_key(id[i], id[next[i]]));
    if (it != impl_->merges.end()) heap.push({it->second.first, i});
  };
  for (int i = 0; i + 1 < n; ++i) push(i);
  std::vector<bool> alive(word.size(), true);
  while (!heap.empty()) {
    const Entry top = heap.top();
    heap.pop();
    const int i = top.pos;
    if (!alive[i] || next[i] < 0) continue;
    auto it = impl_->merges.find(pair_key(id[i], id[next[i]]));
    if (it == impl_->merges.end() || it->second.first != top.rank) continue;
    const int j = next[i];
    id[i] = it->second.second;
    alive[j] = false;
    next[i] = next[j];
    if (next[j] >= 0) prev[next[j]] = i;
    push(prev[i]);
    push(i);
  }
  std::vector<int32_t> out;
  for (int i = 0; i >= 0; i = next[i]) out.push_back(id[i]);
  return out;
}

void HfBpeTokenizer::encode_segment(std::string_view text, std::vector<int32_t>& ids) const {
  if (text.empty()) return;
  std::string normalized;
  if (!impl_->normalizer.is_identity()) {
    normalized = impl_->normalizer.apply(text);
    text = normalized;
  }
  std::vector<std::string_view> pieces;
  std::deque<std::string> arena;
  impl_->pre_tokenizer.split(text, pieces, arena);
  for (std::string_view piece : pieces)
    impl_->cache.append(piece, ids, [this](std::string_view w) { return encode_word(w); });
}

std::vector<int32_t> HfBpeTokenizer::encode(std::string_view text) const {
  std::vector<int32_t> ids;
  ids.reserve(text.size() / 4 + 1);
  size_t segment = 0;  // start of the text not yet encoded
  for (size_t pos = 0; pos < text.size();) {
    const std::vector<int>& candidates =
        added_by_first_byte_[static_cast<unsigned char>(text[pos])];
    const AddedToken* match = nullptr;
    for (int k : candidates) {
      if (text.substr(pos).starts_with(added_[k].content)) {
        match = &added_[k];
        break;  // longest first
      }
    }
    if (match == nullptr) {
      ++pos;
      continue;
    }
    size_t start = pos, end = pos + match->content.size();
    if (match->lstrip)
      while (start > segment && is_space(text[start - 1])) --start;
    if (match->rstrip)
      while (end < text.size() && is_space(text[end])) ++end;
    encode_segment(text.substr(segment, start - segment), ids);
    ids.push_back(match->id);
    segment = pos = end;
  }
  encode_segment(text.substr(segment), ids);
  return ids;
}

std::vector<std::string> HfBpeTokenizer::pre_tokenize(std::string_view text) const {
  std::string normalized = impl_->normalizer.apply(text);
  std::vector<std::string_view> pieces;
  std::deque<std::string> arena;
  impl_->pre_tokenizer.split(normalized, pieces, arena);
  return {pieces.begin(), pieces.end()};
}

std::string HfBpeTokenizer::decode(const std::vector<int32_t>& ids) const {
  std::string text;
  for (int32_t id : ids) {
    MEMENTO_EXPECT(id >= 0 && id < vocab_size() && valid_[id], DataError, source_, ": token id ",
                   id, " is not in the vocabulary (ids in [0, ", vocab_size(), "))");
    text += pieces_[id];
  }
  return text;
}

std::string HfBpeTokenizer::describe() const {
  std::ostringstream os;
  os << "Hugging Face byte-level BPE " << source_ << ": vocab " << vocab_size() << ", "
     << num_merges_ << " merges, " << added_.size() << " added tokens";
  auto name = [&](std::optional<int32_t> id) {
    return id ? detail::concat(pieces_[*id], " (", *id, ")") : std::string("none");
  };
  os << ", bos " << name(bos_) << ", eos " << name(eos_);
  return os.str();
}

}  // namespace memento
