#include "launch/config.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cmath>
#include <fstream>
#include <map>
#include <optional>
#include <sstream>

#include "core/error.h"
#include "memory/activation_policy.h"
#include "optim/optimizer.h"

namespace memento {

namespace {

// The schema, written once: the reader, the writer, the key lister and the differ all walk it, so
// that a key added here is parsed, printed, diffed and suggested everywhere.
template <typename M, typename V>
void visit_model(M& m, V& v) {
  v.field("vocab_size", m.vocab_size);
  v.field("dim", m.dim);
  v.field("n_layers", m.n_layers);
  v.field("n_heads", m.n_heads);
  v.field("n_kv_heads", m.n_kv_heads);
  v.field("ffn_dim", m.ffn_dim);
  v.field("max_seq_len", m.max_seq_len);
  v.field("rope_theta", m.rope_theta);
  v.field("norm_eps", m.norm_eps);
  v.field("init_std", m.init_std);
  v.field("tie_embeddings", m.tie_embeddings);
  v.field("layer_pattern", m.layer_pattern);
  v.section("linear_attention", [&] {
    v.field("decay", m.linear_decay);
    v.field("output_norm", m.linear_output_norm);
    v.field("chunk", m.linear_chunk);
  });
  v.field("dtype", m.dtype);
  v.field("device", m.device);
}

template <typename C, typename V>
void visit_config(C& c, V& v) {
  v.section("run", [&] {
    v.field("name", c.run.name);
    v.field("out_dir", c.run.out_dir);
    v.field("seed", c.run.seed);
  });
  v.section("model", [&] { visit_model(c.model, v); });
  v.section("data", [&] {
    v.field("train", c.data.train);
    v.field("val", c.data.val);
    v.field("format", c.data.format);
    v.field("val_fraction", c.data.val_fraction);
    v.field("tokenizer", c.data.tokenizer);
  });
  v.section("train", [&] {
    v.field("seq_len", c.train.seq_len);
    v.field("micro_batch", c.train.micro_batch);
    v.field("global_batch", c.train.global_batch);
    v.field("steps", c.train.steps);
    v.field("eval_every", c.train.eval_every);
    v.field("eval_batches", c.train.eval_batches);
    v.field("log_every", c.train.log_every);
    v.field("threads", c.train.threads);
    v.field("peak_tflops", c.train.peak_tflops);
  });
  v.section("optim", [&] {
    v.field("name", c.optim.name);
    v.field("lr", c.optim.lr);
    v.field("min_lr", c.optim.min_lr);
    v.field("warmup_steps", c.optim.warmup_steps);
    v.field("schedule", c.optim.schedule);
    v.field("beta1", c.optim.beta1);
    v.field("beta2", c.optim.beta2);
    v.field("eps", c.optim.eps);
    v.field("weight_decay", c.optim.weight_decay);
    v.field("grad_clip", c.optim.grad_clip);
  });
  v.section("checkpoint", [&] {
    v.field("dir", c.checkpoint.dir);
    v.field("every", c.checkpoint.every);
    v.field("keep", c.checkpoint.keep);
    v.field("at_end", c.checkpoint.at_end);
    v.field("init_from_hf", c.checkpoint.init_from_hf);
  });
  v.section("memory", [&] {
    v.field("activation_policy", c.memory.activation_policy);
    v.field("budget_bytes", c.memory.budget_bytes);
  });
  v.section("parallel", [&] {
    v.field("dp", c.parallel.dp);
    v.field("tp", c.parallel.tp);
    v.field("pp", c.parallel.pp);
    v.field("cp", c.parallel.cp);
    v.field("zero1", c.parallel.zero1);
    v.field("bucket_mb", c.parallel.bucket_mb);
    v.field("nccl_timeout_s", c.parallel.nccl_timeout_s);
  });
}

std::string join_path(const std::string& prefix, const std::string& key) {
  return prefix.empty() ? key : prefix + "." + key;
}

// ---------------------------------------------------------------------------------------------
// Values as YAML text. Doubles use the shortest text that reads back to the same value.

std::string format_value(int64_t v) { return std::to_string(v); }
std::string format_value(uint64_t v) { return std::to_string(v); }
std::string format_value(bool v) { return v ? "true" : "false"; }
std::string format_value(DType v) { return std::string(dtype_name(v)); }

std::string format_value(double v) {
  // Fixed notation where it reads well (500000.0, 0.0003), scientific for the rest (1e-08).
  constexpr double kFixedMin = 1e-4;
  constexpr double kFixedMax = 1e16;
  const double magnitude = std::fabs(v);
  const bool fixed = magnitude == 0 || (magnitude >= kFixedMin && magnitude < kFixedMax);
  char buf[400];  // the longest fixed form of a double below kFixedMax fits easily
  const auto result = std::to_chars(
      buf, buf + sizeof(buf), v, fixed ? std::chars_format::fixed : std::chars_format::scientific);
  std::string text(buf, result.ptr);
  if (text.find_first_of(".eEn") == std::string::npos) text += ".0";  // keep it visibly a float
  return text;
}

std::string format_value(const std::string& v) {
  std::string out = "\"";
  for (const char ch : v) {
    const auto c = static_cast<unsigned char>(ch);
    if (ch == '"' || ch == '\\') {
      out += '\\';
      out += ch;
    } else if (ch == '\n') {
      out += "\\n";
    } else if (ch == '\t') {
      out += "\\t";
    } else if (c < 0x20 || c == 0x7f) {
      constexpr char kHex[] = "0123456789abcdef";
      out += "\\x";
      out += kHex[c >> 4];
      out += kHex[c & 0xf];
    } else {
      out += ch;
    }
  }
  return out + "\"";
}

std::string format_value(const std::vector<AttentionKind>& v) {
  std::string out = "[";
  for (size_t i = 0; i < v.size(); ++i) out += (i ? ", " : "") + attention_kind_name(v[i]);
  return out + "]";
}

// ---------------------------------------------------------------------------------------------
// Visitors over the schema.

// Every key path of the schema: sections ("model.linear_attention") and leaves ("train.steps").
struct KeyLister {
  std::vector<std::string> prefix;
  std::map<std::string, bool> is_leaf;
  std::vector<std::string> ordered;

  void add(const std::string& key, bool leaf) {
    std::string path = prefix.empty() ? key : join_path(prefix.back(), key);
    is_leaf[path] = leaf;
    ordered.push_back(path);
  }
  template <typename F>
  void section(const char* key, F&& body) {
    add(key, false);
    prefix.push_back(join_path(prefix.empty() ? "" : prefix.back(), key));
    body();
    prefix.pop_back();
  }
  template <typename T>
  void field(const char* key, const T&) {
    add(key, true);
  }
};

const KeyLister& known_keys() {
  static const KeyLister keys = [] {
    KeyLister lister;
    const Config defaults;
    visit_config(defaults, lister);
    return lister;
  }();
  return keys;
}

size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diagonal = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      const size_t above = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diagonal + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diagonal = above;
    }
  }
  return row[b.size()];
}

std::string leaf_name(const std::string& path) {
  const size_t dot = path.rfind('.');
  return dot == std::string::npos ? path : path.substr(dot + 1);
}

// " (did you mean 'train.micro_batch'?)" for the nearest known key, or "" when none is close.
std::string suggestion(const std::string& path) {
  constexpr size_t kMaxDistance = 3;
  const std::string leaf = leaf_name(path);
  std::string best;
  size_t best_distance = kMaxDistance + 1;
  for (const std::string& known : known_keys().ordered) {
    // The right key in the wrong section ("model.seq_len" for "train.seq_len") wins outright.
    const size_t distance = leaf_name(known) == leaf ? 0 : edit_distance(path, known);
    if (distance < best_distance) {
      best_distance = distance;
      best = known;
    }
  }
  return best.empty() ? "" : " (did you mean '" + best + "'?)";
}

// Where a key came from, for error messages: "configs/tiny.yaml:12", or the --set that set it.
struct Source {
  std::string name;
  std::map<std::string, std::string> set_by;  // key path -> the --set argument that set it

  std::string where(const std::string& path, const YAML::Node* node) const {
    for (std::string p = path.substr(0, path.find('['));;) {
      if (auto it = set_by.find(p); it != set_by.end()) return name + " (--set " + it->second + ")";
      const size_t dot = p.rfind('.');
      if (dot == std::string::npos) break;
      p.resize(dot);
    }
    if (node != nullptr && node->Mark().line >= 0) {
      return name + ":" + std::to_string(node->Mark().line + 1);
    }
    return name;
  }
};

std::optional<YAML::Node> find_child(const YAML::Node& map, const std::string& key) {
  if (!map.IsMap()) return std::nullopt;
  for (auto it = map.begin(); it != map.end(); ++it) {
    if (it->first.IsScalar() && it->first.Scalar() == key) return it->second;
  }
  return std::nullopt;
}

// yaml-cpp: assigning to a Node overwrites the node it refers to, in the tree; reset() rebinds
// the handle. Walks therefore reset(), and never assign, a Node (or an optional of one).
std::optional<YAML::Node> find_path(const YAML::Node& root, const std::string& path) {
  YAML::Node node(root);
  std::stringstream parts(path);
  for (std::string key; std::getline(parts, key, '.');) {
    const std::optional<YAML::Node> child = find_child(node, key);
    if (!child) return std::nullopt;
    node.reset(*child);
  }
  return node;
}

std::string describe(const YAML::Node& node) {
  if (node.IsScalar()) return "'" + node.Scalar() + "'";
  if (node.IsSequence()) return "a list";
  if (node.IsMap()) return "a map";
  return "nothing";
}

// Reads a YAML tree into a Config: unknown keys, duplicate keys and wrong types are errors.
class Reader {
 public:
  explicit Reader(const Source& source) : source_(source) {}

  void read(const YAML::Node& root, Config& config) {
    if (!root.IsDefined() || root.IsNull()) return;
    if (!root.IsMap()) {
      throw ConfigError(source_.where("", &root) +
                        ": expected a map of sections (run, model, data, ...), got " +
                        describe(root));
    }
    check_keys(root, "");
    nodes_.push_back(root);
    prefixes_.emplace_back();
    visit_config(config, *this);
  }

  template <typename F>
  void section(const char* key, F&& body) {
    const std::string path = join_path(prefixes_.back(), key);
    const std::optional<YAML::Node> node = find_child(nodes_.back(), key);
    if (!node || node->IsNull()) return;  // absent or empty: the defaults stand
    if (!node->IsMap()) fail(path, *node, "expected a map of keys, got " + describe(*node));
    check_keys(*node, path);
    nodes_.push_back(*node);
    prefixes_.push_back(path);
    body();
    nodes_.pop_back();
    prefixes_.pop_back();
  }

  template <typename T>
  void field(const char* key, T& value) {
    const std::string path = join_path(prefixes_.back(), key);
    if (const std::optional<YAML::Node> node = find_child(nodes_.back(), key)) {
      parse(*node, path, value);
    }
  }

 private:
  [[noreturn]] void fail(const std::string& path, const YAML::Node& node,
                         const std::string& message) const {
    throw ConfigError(source_.where(path, &node) + ": " + path + ": " + message);
  }

  void check_keys(const YAML::Node& map, const std::string& prefix) const {
    const auto& known = known_keys().is_leaf;
    std::vector<std::string> seen;
    for (auto it = map.begin(); it != map.end(); ++it) {
      if (!it->first.IsScalar()) {
        fail(prefix.empty() ? "<top level>" : prefix, it->first,
             "expected a key name, got " + describe(it->first));
      }
      const std::string path = join_path(prefix, it->first.Scalar());
      if (!known.contains(path)) {
        throw ConfigError(source_.where(path, &it->first) + ": unknown key '" + path + "'" +
                          suggestion(path));
      }
      if (std::find(seen.begin(), seen.end(), path) != seen.end()) {
        throw ConfigError(source_.where(path, &it->first) + ": duplicate key '" + path + "'");
      }
      seen.push_back(path);
    }
  }

  std::string scalar(const YAML::Node& node, const std::string& path, const char* expected) const {
    if (!node.IsScalar()) {
      fail(path, node, std::string("expected ") + expected + ", got " + describe(node));
    }
    return node.Scalar();
  }

  template <typename Int>
  void parse_integer(const YAML::Node& node, const std::string& path, Int& value) const {
    const char* expected = std::is_signed_v<Int> ? "an integer" : "a non-negative integer";
    std::string text = scalar(node, path, expected);
    if (!text.empty() && text[0] == '+') text.erase(0, 1);
    Int parsed{};
    const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), parsed);
    if (error == std::errc::result_out_of_range) {
      fail(path, node, "integer out of range: " + describe(node));
    }
    if (error != std::errc() || end != text.data() + text.size() || text.empty()) {
      fail(path, node, std::string("expected ") + expected + ", got " + describe(node));
    }
    value = parsed;
  }

  void parse(const YAML::Node& node, const std::string& path, int64_t& value) const {
    parse_integer(node, path, value);
  }
  void parse(const YAML::Node& node, const std::string& path, uint64_t& value) const {
    parse_integer(node, path, value);
  }

  void parse(const YAML::Node& node, const std::string& path, double& value) const {
    std::string text = scalar(node, path, "a number");
    if (!text.empty() && text[0] == '+') text.erase(0, 1);
    double parsed = 0;
    const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), parsed);
    if (error != std::errc() || end != text.data() + text.size() || text.empty()) {
      fail(path, node, "expected a number, got " + describe(node));
    }
    if (!std::isfinite(parsed)) fail(path, node, "expected a finite number, got " + describe(node));
    value = parsed;
  }

  // Only true and false: YAML 1.1's yes/no/on/off are ambiguous and rejected.
  void parse(const YAML::Node& node, const std::string& path, bool& value) const {
    const std::string text = scalar(node, path, "true or false");
    if (text != "true" && text != "false") {
      fail(path, node, "expected true or false, got " + describe(node));
    }
    value = text == "true";
  }

  void parse(const YAML::Node& node, const std::string& path, std::string& value) const {
    value = node.IsNull() ? std::string() : scalar(node, path, "a string");
  }

  void parse(const YAML::Node& node, const std::string& path, DType& value) const {
    const std::string text = scalar(node, path, "a dtype name");
    try {
      value = dtype_from_name(text);
    } catch (const ConfigError&) {
      fail(path, node, "expected a dtype name (f32, f64, bf16), got " + describe(node));
    }
  }

  // A list of softmax/linear, or one name for a uniform model.
  void parse(const YAML::Node& node, const std::string& path,
             std::vector<AttentionKind>& value) const {
    auto kind = [&](const YAML::Node& item, const std::string& item_path) {
      const std::string text = scalar(item, item_path, "softmax or linear");
      if (text == "softmax") return AttentionKind::kSoftmax;
      if (text == "linear") return AttentionKind::kLinear;
      fail(item_path, item, "expected softmax or linear, got " + describe(item));
    };
    if (node.IsScalar()) {
      value = {kind(node, path)};
      return;
    }
    if (!node.IsSequence()) {
      fail(path, node, "expected a list of softmax/linear, got " + describe(node));
    }
    std::vector<AttentionKind> kinds;
    for (size_t i = 0; i < node.size(); ++i) {
      kinds.push_back(kind(node[i], path + "[" + std::to_string(i) + "]"));
    }
    value = std::move(kinds);
  }

  const Source& source_;
  std::vector<YAML::Node> nodes_;
  std::vector<std::string> prefixes_;
};

// Prints the schema as YAML, two spaces per level.
struct Writer {
  std::string out;
  int depth = 0;

  void indent() { out.append(static_cast<size_t>(2 * depth), ' '); }
  template <typename F>
  void section(const char* key, F&& body) {
    indent();
    out += key;
    out += ":\n";
    ++depth;
    body();
    --depth;
  }
  template <typename T>
  void field(const char* key, const T& value) {
    indent();
    out += key;
    out += ": ";
    out += format_value(value);
    out += '\n';
  }
};

// Every leaf as (key path, YAML text), in schema order.
struct Flattener {
  std::vector<std::string> prefix;
  std::vector<std::pair<std::string, std::string>> leaves;

  template <typename F>
  void section(const char* key, F&& body) {
    prefix.push_back(join_path(prefix.empty() ? "" : prefix.back(), key));
    body();
    prefix.pop_back();
  }
  template <typename T>
  void field(const char* key, const T& value) {
    leaves.emplace_back(join_path(prefix.empty() ? "" : prefix.back(), key), format_value(value));
  }
};

// ---------------------------------------------------------------------------------------------
// --set key.path=value

YAML::Node load_yaml(const std::string& text, const std::string& source_name) {
  try {
    return YAML::Load(text);
  } catch (const YAML::ParserException& e) {
    throw ConfigError(source_name + ":" + std::to_string(e.mark.line + 1) +
                      ": invalid YAML: " + e.msg);
  }
}

void set_path(YAML::Node root, const std::string& path, const YAML::Node& value,
              const std::string& arg, Source& source) {
  const std::string origin = source.name + " (--set " + arg + ")";
  const auto& known = known_keys().is_leaf;
  const auto it = known.find(path);
  if (it == known.end()) {
    throw ConfigError(origin + ": unknown key '" + path + "'" + suggestion(path));
  }
  if (!it->second && value.IsMap()) {  // a section given as a map: set each of its keys
    for (auto child = value.begin(); child != value.end(); ++child) {
      if (!child->first.IsScalar()) {
        throw ConfigError(origin + ": " + path + ": expected a key name, got " +
                          describe(child->first));
      }
      set_path(root, join_path(path, child->first.Scalar()), child->second, arg, source);
    }
    source.set_by[path] = arg;
    return;
  }
  std::stringstream parts(path);
  std::vector<std::string> keys;
  for (std::string key; std::getline(parts, key, '.');) keys.push_back(key);
  YAML::Node node(root);  // assignments below write into the tree: see find_path
  std::string prefix;
  for (size_t i = 0; i + 1 < keys.size(); ++i) {
    prefix = join_path(prefix, keys[i]);
    const std::optional<YAML::Node> child = find_child(node, keys[i]);
    if (child && child->IsMap()) {
      node.reset(*child);
      continue;
    }
    if (child && !child->IsNull()) {
      throw ConfigError(origin + ": cannot set '" + path + "': " + source.where(prefix, &*child) +
                        " sets '" + prefix + "' to " + describe(*child) + ", not a map");
    }
    YAML::Node map(YAML::NodeType::Map);
    node[keys[i]] = map;
    node.reset(map);
  }
  node[keys.back()] = value;
  source.set_by[path] = arg;
}

void apply_override(YAML::Node root, const std::string& arg, Source& source) {
  const std::string origin = source.name + " (--set " + arg + ")";
  const size_t eq = arg.find('=');
  MEMENTO_EXPECT(eq != std::string::npos && eq > 0, ConfigError, origin,
                 ": expected --set key.path=value");
  const YAML::Node value = [&] {
    try {
      return YAML::Load(arg.substr(eq + 1));
    } catch (const YAML::ParserException& e) {
      throw ConfigError(origin + ": the value is not valid YAML: " + e.msg);
    }
  }();
  set_path(root, arg.substr(0, eq), value, arg, source);
}

// Config::validate() messages start with "config: <key path>"; name the file, line or --set.
// A check across keys ("optim.warmup_steps = 30 exceeds train.steps = 1") names where each key
// came from, and leads with a --set among them: that is the edit the user just made.
[[noreturn]] void rethrow_located(const ConfigError& error, const YAML::Node& root,
                                  const Source& source) {
  static const std::string kPrefix = "config: ";
  const std::string message = error.what();
  if (message.rfind(kPrefix, 0) != 0) throw error;
  const std::string rest = message.substr(kPrefix.size());
  const auto where = [&](const std::string& path) {
    const std::optional<YAML::Node> node = find_path(root, path);
    return source.where(path, node ? &*node : nullptr);
  };
  const auto set_by_flag = [&](const std::string& path) {
    return where(path).find("(--set ") != std::string::npos;
  };
  std::vector<std::string> paths{rest.substr(0, rest.find_first_of(" :=["))};
  for (const std::string& key : known_keys().ordered) {
    if (!known_keys().is_leaf.at(key) || key == paths.front()) continue;
    // A whole word of the message: not a prefix of a longer key, not part of another word.
    for (size_t at = rest.find(key); at != std::string::npos; at = rest.find(key, at + 1)) {
      const size_t end = at + key.size();
      const auto word = [](char c) {
        return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '.';
      };
      if ((at == 0 || !word(rest[at - 1])) && (end == rest.size() || !word(rest[end]))) {
        paths.push_back(key);
        break;
      }
    }
  }
  const auto lead = std::find_if(paths.begin(), paths.end(), set_by_flag);
  const std::string first = lead != paths.end() ? *lead : paths.front();
  // Only a --set makes the other keys' origins worth a word; a default has none to name.
  std::string others;
  const bool any_set = lead != paths.end();
  for (const std::string& path : paths) {
    if (!any_set || path == first || where(path) == where(first)) continue;
    if (!set_by_flag(path) && !find_path(root, path)) continue;
    others += detail::concat(others.empty() ? " (" : "; ", path, " from ", where(path));
  }
  throw ConfigError(where(first) + ": " + rest + (others.empty() ? "" : others + ")"));
}

YAML::Node parse_root(const std::string& yaml_text, const std::string& source_name) {
  YAML::Node root = load_yaml(yaml_text, source_name);
  if (!root.IsDefined() || root.IsNull()) root.reset(YAML::Node(YAML::NodeType::Map));
  if (!root.IsMap()) {
    throw ConfigError(Source{source_name, {}}.where("", &root) +
                      ": expected a map of sections (run, model, data, ...), got " +
                      describe(root));
  }
  return root;
}

// ---------------------------------------------------------------------------------------------
// Checks shared by the validate() methods. Messages: "config: <key path>: <what was wrong>".

template <typename... Args>
[[noreturn]] void invalid(const Args&... parts) {
  throw ConfigError(detail::concat("config: ", parts...));
}

void positive(int64_t value, const char* path) {
  if (value <= 0) invalid(path, ": must be positive, got ", value);
}
void positive(double value, const char* path) {
  if (!(value > 0)) invalid(path, ": must be positive, got ", value);
}
void non_negative(int64_t value, const char* path) {
  if (value < 0) invalid(path, ": must be >= 0, got ", value);
}
void non_negative(double value, const char* path) {
  if (!(value >= 0)) invalid(path, ": must be >= 0, got ", value);
}
void fraction(double value, const char* path) {  // [0, 1)
  if (!(value >= 0 && value < 1)) invalid(path, ": must be in [0, 1), got ", value);
}

std::string list(const std::vector<std::string>& names) {
  std::string out;
  for (const auto& name : names) out += (out.empty() ? "" : ", ") + name;
  return out;
}

void one_of(const std::string& value, const std::vector<std::string>& allowed, const char* path) {
  if (std::find(allowed.begin(), allowed.end(), value) == allowed.end()) {
    invalid(path, ": unknown value '", value, "'; supported: ", list(allowed));
  }
}

}  // namespace

// -----------------------------------------------------------------------------------------------

void RunConfig::validate() const {
  if (name.empty()) invalid("run.name: must not be empty");
  if (out_dir.empty()) invalid("run.out_dir: must not be empty");
}

void DataConfig::validate() const {
  one_of(format, kDataFormats, "data.format");
  fraction(val_fraction, "data.val_fraction");
}

void DataConfig::validate_for_training() const {
  validate();
  if (train.empty()) {
    invalid("data.train: required to train: set it in the config or with --set data.train=PATH");
  }
}

void TrainConfig::validate() const {
  positive(seq_len, "train.seq_len");
  positive(micro_batch, "train.micro_batch");
  positive(global_batch, "train.global_batch");
  positive(steps, "train.steps");
  non_negative(eval_every, "train.eval_every");
  positive(eval_batches, "train.eval_batches");
  positive(log_every, "train.log_every");
  non_negative(threads, "train.threads");
  non_negative(peak_tflops, "train.peak_tflops");
}

void OptimConfig::validate() const {
  one_of(name, optim::optimizer_names(), "optim.name");
  positive(lr, "optim.lr");
  non_negative(min_lr, "optim.min_lr");
  if (min_lr > lr) invalid("optim.min_lr = ", min_lr, " exceeds optim.lr = ", lr);
  non_negative(warmup_steps, "optim.warmup_steps");
  one_of(schedule, kLrSchedules, "optim.schedule");
  fraction(beta1, "optim.beta1");
  fraction(beta2, "optim.beta2");
  positive(eps, "optim.eps");
  non_negative(weight_decay, "optim.weight_decay");
  non_negative(grad_clip, "optim.grad_clip");
}

void CheckpointConfig::validate() const {
  non_negative(every, "checkpoint.every");
  positive(keep, "checkpoint.keep");
}

void MemoryConfig::validate() const {
  const std::vector<std::string>& policies = activation_policies();  // the factory's list
  if (std::find(policies.begin(), policies.end(), activation_policy) == policies.end()) {
    invalid("memory.activation_policy: '", activation_policy,
            "' is not available yet; supported: ", list(policies));
  }
  non_negative(budget_bytes, "memory.budget_bytes");
}

void ParallelConfig::validate() const {
  positive(dp, "parallel.dp");
  positive(tp, "parallel.tp");
  positive(pp, "parallel.pp");
  positive(cp, "parallel.cp");
  if (tp > 1) {
    invalid("parallel.tp = ", tp, ": tensor parallelism is not available in this build yet");
  }
  if (pp > 1) {
    invalid("parallel.pp = ", pp, ": pipeline parallelism is not available in this build yet");
  }
  if (cp > 1) {
    invalid("parallel.cp = ", cp, ": context parallelism is not available in this build yet");
  }
  if (!(bucket_mb > 0)) invalid("parallel.bucket_mb: must be positive, got ", bucket_mb);
  if (!(nccl_timeout_s >= 0) || !std::isfinite(nccl_timeout_s))
    invalid("parallel.nccl_timeout_s: must be a number of seconds >= 0 (0: no deadline), got ",
            nccl_timeout_s);
}

void Config::validate() const {
  run.validate();
  model.validate("model");
  data.validate();
  train.validate();
  optim.validate();
  checkpoint.validate();
  memory.validate();
  parallel.validate();
  const int64_t per_step = train.micro_batch * parallel.dp;
  if (train.global_batch % per_step != 0) {
    invalid("train.global_batch = ", train.global_batch,
            " is not divisible by train.micro_batch × parallel.dp = ", train.micro_batch, " × ",
            parallel.dp);
  }
  if (train.seq_len > model.max_seq_len) {
    invalid("train.seq_len = ", train.seq_len, " exceeds model.max_seq_len = ", model.max_seq_len);
  }
  if (optim.warmup_steps > train.steps) {
    invalid("optim.warmup_steps = ", optim.warmup_steps, " exceeds train.steps = ", train.steps);
  }
}

bool Config::operator==(const Config& other) const {
  return run == other.run && diff_model(model, other.model).empty() && data == other.data &&
         train == other.train && optim == other.optim && checkpoint == other.checkpoint &&
         memory == other.memory && parallel == other.parallel;
}

Config parse_config(const std::string& yaml_text, const std::vector<std::string>& overrides,
                    const std::string& source_name) {
  Source source{source_name, {}};
  YAML::Node root = parse_root(yaml_text, source_name);
  for (const std::string& arg : overrides) apply_override(root, arg, source);
  Config config;
  Reader(source).read(root, config);
  if (config.checkpoint.dir.empty()) config.checkpoint.dir = config.run.out_dir + "/checkpoints";
  try {
    config.validate();
  } catch (const ConfigError& error) {
    rethrow_located(error, root, source);
  }
  return config;
}

Config load_config(const std::string& path, const std::vector<std::string>& overrides) {
  std::ifstream file(path);
  MEMENTO_EXPECT(file.good(), ConfigError, path, ": cannot open the config file");
  std::stringstream text;
  text << file.rdbuf();
  MEMENTO_EXPECT(!file.bad(), ConfigError, path, ": cannot read the config file");
  return parse_config(text.str(), overrides, path);
}

std::string to_yaml(const Config& config) {
  Writer writer;
  visit_config(config, writer);
  return writer.out;
}

std::string model_to_yaml(const ModelConfig& model) {
  Writer writer;
  writer.section("model", [&] { visit_model(model, writer); });
  return writer.out;
}

ModelConfig parse_model_config(const std::string& yaml_text, const std::string& source_name) {
  const Source source{source_name, {}};
  const YAML::Node document = parse_root(yaml_text, source_name);
  const std::optional<YAML::Node> model = find_child(document, "model");
  MEMENTO_EXPECT(model.has_value(), ConfigError, source_name, ": no 'model' section");
  YAML::Node root(YAML::NodeType::Map);
  root["model"] = *model;
  Config config;
  Reader(source).read(root, config);
  try {
    config.model.validate("model");
  } catch (const ConfigError& error) {
    rethrow_located(error, root, source);
  }
  return config.model;
}

std::vector<std::string> diff_model(const ModelConfig& a, const ModelConfig& b) {
  Flattener fa;
  Flattener fb;
  fa.section("model", [&] { visit_model(a, fa); });
  fb.section("model", [&] { visit_model(b, fb); });
  std::vector<std::string> differences;
  for (size_t i = 0; i < fa.leaves.size(); ++i) {
    if (fa.leaves[i].second != fb.leaves[i].second) {
      differences.push_back(fa.leaves[i].first + ": " + fa.leaves[i].second + " vs " +
                            fb.leaves[i].second);
    }
  }
  return differences;
}

}  // namespace memento
