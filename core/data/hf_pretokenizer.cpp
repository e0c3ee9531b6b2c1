#include "core/data/hf_pretokenizer.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <algorithm>
#include <array>
#include <nlohmann/json.hpp>
#include <utility>

#ifdef MEMENTO_WITH_ICU
#include <unicode/normalizer2.h>
#include <unicode/unistr.h>
#endif

#include "core/error.h"

namespace memento {

const char* const kGpt2Pattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

namespace {

using nlohmann::json;

constexpr size_t kJitStackStart = size_t{32} << 10;
constexpr size_t kJitStackMax = size_t{8} << 20;

std::string pcre2_message(int code) {
  std::array<PCRE2_UCHAR, 256> buf{};
  pcre2_get_error_message(code, buf.data(), buf.size());
  return reinterpret_cast<const char*>(buf.data());
}

// Per-thread match state: the regexes are shared, their scratch space is not.
struct MatchScratch {
  pcre2_match_data* data = pcre2_match_data_create(1, nullptr);
  pcre2_match_context* context = pcre2_match_context_create(nullptr);
  pcre2_jit_stack* stack = pcre2_jit_stack_create(kJitStackStart, kJitStackMax, nullptr);
  MatchScratch() {
    if (context != nullptr && stack != nullptr) pcre2_jit_stack_assign(context, nullptr, stack);
  }
  MatchScratch(const MatchScratch&) = delete;
  MatchScratch& operator=(const MatchScratch&) = delete;
  ~MatchScratch() {
    pcre2_jit_stack_free(stack);
    pcre2_match_context_free(context);
    pcre2_match_data_free(data);
  }
};

MatchScratch& scratch() {
  thread_local MatchScratch s;
  return s;
}

// The JSON type as a word, for error messages.
std::string type_of(const json& v) { return v.type_name(); }

const json& member(const json& object, const char* key, const std::string& where,
                   const std::string& path) {
  auto it = object.find(key);
  MEMENTO_EXPECT(it != object.end(), DataError, where, ": ", path, ".", key, " is missing");
  return *it;
}

bool flag(const json& object, const char* key, bool fallback, const std::string& where,
          const std::string& path) {
  auto it = object.find(key);
  if (it == object.end() || it->is_null()) return fallback;
  MEMENTO_EXPECT(it->is_boolean(), DataError, where, ": ", path, ".", key,
                 " must be true or false, found ", type_of(*it));
  return it->get<bool>();
}

}  // namespace

Regex::Regex(const std::string& pattern, const std::string& where) : where_(where) {
  int error = 0;
  PCRE2_SIZE offset = 0;
  pcre2_code* code =
      pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(),
                    PCRE2_UTF | PCRE2_UCP | PCRE2_MATCH_INVALID_UTF, &error, &offset, nullptr);
  MEMENTO_EXPECT(code != nullptr, DataError, where, ": regular expression does not compile at ",
                 "offset ", offset, ": ", pcre2_message(error), " (pattern ", pattern, ")");
  pcre2_jit_compile(code, PCRE2_JIT_COMPLETE);  // the interpreter is the fallback
  code_ = code;
}

Regex::Regex(Regex&& other) noexcept
    : code_(std::exchange(other.code_, nullptr)), where_(std::move(other.where_)) {}

Regex& Regex::operator=(Regex&& other) noexcept {
  if (this != &other) {
    pcre2_code_free(static_cast<pcre2_code*>(code_));
    code_ = std::exchange(other.code_, nullptr);
    where_ = std::move(other.where_);
  }
  return *this;
}

Regex::~Regex() { pcre2_code_free(static_cast<pcre2_code*>(code_)); }

bool Regex::find(std::string_view text, size_t from, size_t& start, size_t& end) const {
  MatchScratch& s = scratch();
  MEMENTO_EXPECT(s.data != nullptr && s.context != nullptr, DataError, where_,
                 ": out of memory for regex matching");
  while (from < text.size()) {
    const int rc = pcre2_match(static_cast<const pcre2_code*>(code_),
                               reinterpret_cast<PCRE2_SPTR>(text.data()), text.size(), from, 0,
                               s.data, s.context);
    if (rc == PCRE2_ERROR_NOMATCH) return false;
    MEMENTO_EXPECT(rc >= 0, DataError, where_, ": regex match failed at byte ", from, " of a ",
                   text.size(), "-byte piece: ", pcre2_message(rc));
    const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(s.data);
    if (ov[1] > ov[0]) {
      start = ov[0];
      end = ov[1];
      return true;
    }
    // An empty match: look again from the next character.
    from = ov[0] + 1;
    while (from < text.size() && (static_cast<unsigned char>(text[from]) & 0xC0) == 0x80) ++from;
  }
  return false;
}

void PreTokenizer::add_steps(const json& value, const std::string& key, const std::string& where,
                             PreTokenizer& out, bool& byte_level) {
  MEMENTO_EXPECT(value.is_object(), DataError, where, ": ", key, " must be an object, found ",
                 type_of(value));
  MEMENTO_EXPECT(!byte_level, DataError, where, ": ", key,
                 " comes after ByteLevel; only a final ByteLevel step is supported");
  const json& type_value = member(value, "type", where, key);
  MEMENTO_EXPECT(type_value.is_string(), DataError, where, ": ", key, ".type must be a string");
  const std::string type = type_value.get<std::string>();
  if (type == "Sequence") {
    const json& list = member(value, "pretokenizers", where, key);
    MEMENTO_EXPECT(list.is_array(), DataError, where, ": ", key, ".pretokenizers must be a list");
    for (size_t i = 0; i < list.size(); ++i)
      add_steps(list[i], detail::concat(key, ".pretokenizers[", i, "]"), where, out, byte_level);
  } else if (type == "ByteLevel") {
    byte_level = true;
    if (flag(value, "add_prefix_space", true, where, key)) {
      Step step;
      step.prefix_space = true;
      out.steps_.push_back(std::move(step));
    }
    if (flag(value, "use_regex", true, where, key)) {
      Step step;
      step.regex = std::make_unique<Regex>(kGpt2Pattern, where + ": GPT-2 pattern");
      out.steps_.push_back(std::move(step));
    }
  } else if (type == "Split") {
    Step step;
    const json& pattern = member(value, "pattern", where, key);
    if (pattern.is_object() && pattern.contains("Regex") && pattern["Regex"].is_string()) {
      step.regex = std::make_unique<Regex>(pattern["Regex"].get<std::string>(),
                                           detail::concat(where, ": ", key, ".pattern.Regex"));
    } else if (pattern.is_object() && pattern.contains("String") && pattern["String"].is_string()) {
      step.literal = pattern["String"].get<std::string>();
    } else {
      throw DataError(detail::concat(where, ": ", key,
                                     ".pattern must be {\"Regex\": ...} or {\"String\": ...}"));
    }
    const json& behavior = member(value, "behavior", where, key);
    static const std::array<std::pair<const char*, Behavior>, 5> kBehaviors = {{
        {"Removed", Behavior::kRemoved},
        {"Isolated", Behavior::kIsolated},
        {"MergedWithPrevious", Behavior::kMergedWithPrevious},
        {"MergedWithNext", Behavior::kMergedWithNext},
        {"Contiguous", Behavior::kContiguous},
    }};
    bool known = false;
    for (const auto& [name, b] : kBehaviors) {
      if (behavior.is_string() && behavior.get<std::string>() == name) {
        step.behavior = b;
        known = true;
      }
    }
    MEMENTO_EXPECT(known, DataError, where, ": ", key, ".behavior ", behavior.dump(),
                   " is not one of Removed, Isolated, MergedWithPrevious, MergedWithNext, "
                   "Contiguous");
    step.invert = flag(value, "invert", false, where, key);
    out.steps_.push_back(std::move(step));
  } else if (type == "Digits") {
    Step step;
    step.regex = std::make_unique<Regex>(R"(\p{N})", where + ": Digits");
    step.behavior = flag(value, "individual_digits", false, where, key) ? Behavior::kIsolated
                                                                        : Behavior::kContiguous;
    out.steps_.push_back(std::move(step));
  } else {
    throw DataError(detail::concat(where, ": ", key, ".type \"", type,
                                   "\" is not supported (supported: ByteLevel, Split, Digits, "
                                   "Sequence; a byte-level BPE tokenizer.json is expected)"));
  }
}

PreTokenizer PreTokenizer::from_json(const json& value, const std::string& where) {
  MEMENTO_EXPECT(!value.is_null(), DataError, where,
                 ": pre_tokenizer is null; a byte-level BPE tokenizer.json needs a ByteLevel "
                 "pre_tokenizer");
  PreTokenizer out;
  bool byte_level = false;
  add_steps(value, "pre_tokenizer", where, out, byte_level);
  MEMENTO_EXPECT(byte_level, DataError, where,
                 ": pre_tokenizer has no ByteLevel step; only byte-level BPE tokenizers (GPT-2, "
                 "Llama 3, Qwen) are supported in tokenizer.json form");
  return out;
}

void PreTokenizer::apply(const Step& step, std::string_view text,
                         std::vector<std::string_view>& out, std::deque<std::string>& arena) const {
  if (step.prefix_space) {
    if (text.starts_with(' ')) {
      out.push_back(text);
    } else {
      std::string& spaced = arena.emplace_back(1, ' ');
      spaced.append(text);
      out.emplace_back(spaced);
    }
    return;
  }
  // The piece as alternating runs that match (a delimiter) or not, as Hugging Face's
  // NormalizedString::split sees them, then merged per the behaviour.
  struct Run {
    size_t start, end;
    bool match;
  };
  std::vector<Run> runs;
  size_t prev = 0, s = 0, e = 0;
  for (size_t from = 0;; from = e) {
    bool found = false;
    if (step.regex) {
      found = step.regex->find(text, from, s, e);
    } else if (!step.literal.empty()) {
      s = text.find(step.literal, from);
      found = s != std::string_view::npos;
      e = found ? s + step.literal.size() : 0;
    }
    if (!found) break;
    if (prev < s) runs.push_back({prev, s, step.invert});
    runs.push_back({s, e, !step.invert});
    prev = e;
  }
  if (prev < text.size()) runs.push_back({prev, text.size(), step.invert});

  std::vector<Run> merged;
  bool previous_match = false;
  switch (step.behavior) {
    case Behavior::kRemoved:
    case Behavior::kIsolated:
      merged = runs;
      break;
    case Behavior::kMergedWithPrevious:
      for (const Run& r : runs) {
        if (r.match && !previous_match && !merged.empty()) {
          merged.back().end = r.end;
        } else {
          merged.push_back({r.start, r.end, false});
        }
        previous_match = r.match;
      }
      break;
    case Behavior::kMergedWithNext:
      for (auto it = runs.rbegin(); it != runs.rend(); ++it) {
        if (it->match && !previous_match && !merged.empty()) {
          merged.back().start = it->start;
        } else {
          merged.push_back({it->start, it->end, false});
        }
        previous_match = it->match;
      }
      std::reverse(merged.begin(), merged.end());
      break;
    case Behavior::kContiguous:
      for (const Run& r : runs) {
        if (r.match == previous_match && !merged.empty()) {
          merged.back().end = r.end;
        } else {
          merged.push_back({r.start, r.end, false});
        }
        previous_match = r.match;
      }
      break;
  }
  for (const Run& r : merged) {
    if (step.behavior == Behavior::kRemoved && r.match) continue;
    if (r.end > r.start) out.push_back(text.substr(r.start, r.end - r.start));
  }
}

void PreTokenizer::split(std::string_view text, std::vector<std::string_view>& pieces,
                         std::deque<std::string>& arena) const {
  if (text.empty()) return;
  std::vector<std::string_view> current = {text};
  std::vector<std::string_view> next;
  for (const Step& step : steps_) {
    next.clear();
    for (std::string_view piece : current) apply(step, piece, next, arena);
    current.swap(next);
  }
  pieces.insert(pieces.end(), current.begin(), current.end());
}

Normalizer Normalizer::from_json(const json& value, const std::string& where) {
  Normalizer out;
  if (value.is_null()) return out;
  // A Sequence is flattened; each leaf must be a normal form.
  std::vector<std::pair<const json*, std::string>> todo = {{&value, "normalizer"}};
  for (size_t k = 0; k < todo.size(); ++k) {
    const auto [v, key] = todo[k];
    MEMENTO_EXPECT(v->is_object() && v->contains("type") && (*v)["type"].is_string(), DataError,
                   where, ": ", key, " must be an object with a \"type\"");
    const std::string type = (*v)["type"].get<std::string>();
    if (type == "Sequence") {
      const json& list = member(*v, "normalizers", where, key);
      MEMENTO_EXPECT(list.is_array(), DataError, where, ": ", key, ".normalizers must be a list");
      // Inserted right after this entry, in order, so that the forms apply in sequence.
      std::vector<std::pair<const json*, std::string>> children;
      for (size_t i = 0; i < list.size(); ++i)
        children.emplace_back(&list[i], detail::concat(key, ".normalizers[", i, "]"));
      todo.insert(todo.begin() + static_cast<std::ptrdiff_t>(k) + 1, children.begin(),
                  children.end());
      continue;
    }
    static const std::array<const char*, 4> kForms = {"NFC", "NFD", "NFKC", "NFKD"};
    int form = -1;
    for (int f = 0; f < 4; ++f)
      if (type == kForms[f]) form = f;
    MEMENTO_EXPECT(form >= 0, DataError, where, ": ", key, ".type \"", type,
                   "\" is not supported (supported normalizers: none, NFC, NFD, NFKC, NFKD)");
    MEMENTO_EXPECT(normalizers_available(), DataError, where, ": ", key, ".type \"", type,
                   "\" needs Unicode normalisation, and this build has no ICU (install "
                   "libicu-dev and rebuild)");
    out.forms_.push_back(form);
  }
  return out;
}

bool Normalizer::normalizers_available() {
#ifdef MEMENTO_WITH_ICU
  return true;
#else
  return false;
#endif
}

std::string Normalizer::apply(std::string_view text) const {
  if (forms_.empty()) return std::string(text);
#ifdef MEMENTO_WITH_ICU
  icu::UnicodeString s = icu::UnicodeString::fromUTF8(
      icu::StringPiece(text.data(), static_cast<int32_t>(text.size())));
  for (int form : forms_) {
    UErrorCode status = U_ZERO_ERROR;
    const icu::Normalizer2* n = form == 0   ? icu::Normalizer2::getNFCInstance(status)
                                : form == 1 ? icu::Normalizer2::getNFDInstance(status)
                                : form == 2 ? icu::Normalizer2::getNFKCInstance(status)
                                            : icu::Normalizer2::getNFKDInstance(status);
    if (U_SUCCESS(status)) s = n->normalize(s, status);
    MEMENTO_EXPECT(U_SUCCESS(status), DataError,
                   "Unicode normalisation failed: ", u_errorName(status));
  }
  std::string out;
  s.toUTF8String(out);
  return out;
#else
  return std::string(text);
#endif
}

}  // namespace memento
