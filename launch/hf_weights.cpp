// config.json <-> ModelConfig, and loading a Hugging Face directory into a ParameterSet. The export
// from a trainer checkpoint is in launch/hf_export.cpp.
#include "launch/hf_weights.h"

#include <algorithm>
#include <charconv>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "checkpoint/checkpoint_dir.h"
#include "checkpoint/safetensors.h"
#include "core/log.h"

namespace memento {
namespace {

using memento::detail::concat;
using nlohmann::json;

constexpr std::string_view kLlamaModelType = "llama";
constexpr std::string_view kHybridModelType = "memento_llama";
constexpr size_t kMaxListed = 10;  // tensors named per kind of problem in one error

bool has_linear_layers(const ModelConfig& m) {
  return std::find(m.layer_pattern.begin(), m.layer_pattern.end(), AttentionKind::kLinear) !=
         m.layer_pattern.end();
}

std::string torch_dtype_name(DType dtype) {
  switch (dtype) {
    case DType::kF32:
      return "float32";
    case DType::kBF16:
      return "bfloat16";
    case DType::kF16:
      return "float16";
    case DType::kF64:
      return "float64";
    default:
      MEMENTO_CHECK(false, "no torch dtype for ", dtype_name(dtype));
      return "";
  }
}

std::string pattern_text(const ModelConfig& m) {
  std::string s = "[";
  for (size_t i = 0; i < m.layer_pattern.size(); ++i)
    s += (i ? ", " : "") + attention_kind_name(m.layer_pattern[i]);
  return s + "]";
}

std::string read_text_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  MEMENTO_EXPECT(in.good(), CheckpointError, path, ": cannot open");
  std::ostringstream os;
  os << in.rdbuf();
  return os.str();
}

// Typed access to config.json keys; every error names the source and the key.
class HfKeys {
 public:
  HfKeys(const json& root, const std::string& source) : root_(root), source_(source) {}

  template <typename T>
  T get(const char* key, std::optional<T> fallback = std::nullopt) const {
    if (!root_.contains(key) || root_[key].is_null()) {
      MEMENTO_EXPECT(fallback.has_value(), CheckpointError, source_, ": no '", key, "'");
      return *fallback;
    }
    const json& v = root_[key];
    const bool ok = std::is_same_v<T, bool>      ? v.is_boolean()
                    : std::is_same_v<T, int64_t> ? v.is_number_integer()
                    : std::is_same_v<T, double>  ? v.is_number()
                                                 : v.is_string();
    MEMENTO_EXPECT(ok, CheckpointError, source_, ": '", key, "' has the wrong type: ", v.dump());
    return v.get<T>();
  }
  [[noreturn]] void refuse(const std::string& key, const std::string& why) const {
    throw CheckpointError(concat(source_, ": '", key, "' ", why));
  }

 private:
  const json& root_;
  const std::string& source_;
};

std::string text_of(bool v) { return v ? "true" : "false"; }
std::string text_of(int64_t v) { return std::to_string(v); }
// The shortest text that reads back as v, without an exponent where that stays short: 500000,
// 0.000001, 1e-12.
std::string text_of(double v) {
  constexpr size_t kMaxFixed = 12;
  char buf[400];
  const auto fixed = std::to_chars(buf, buf + sizeof(buf), v, std::chars_format::fixed);
  if (fixed.ec == std::errc() && static_cast<size_t>(fixed.ptr - buf) <= kMaxFixed)
    return std::string(buf, fixed.ptr);
  return std::string(buf, std::to_chars(buf, buf + sizeof(buf), v).ptr);
}

// One "hf_key = a but model.key = b" entry per disagreement.
template <typename T>
void compare(std::vector<std::string>& diffs, const char* hf_key, const char* model_key,
             const T& file_value, const T& model_value) {
  if (file_value == model_value) return;
  diffs.push_back(concat(hf_key, " = ", text_of(file_value), " but model.", model_key, " = ",
                         text_of(model_value)));
}

std::string listed(const std::vector<std::string>& items) {
  std::string s;
  for (size_t i = 0; i < items.size() && i < kMaxListed; ++i) s += (i ? ", " : "") + items[i];
  if (items.size() > kMaxListed) s += concat(" and ", items.size() - kMaxListed, " more");
  return s;
}

// Keys of older exports that are buffers, not parameters (transformers < 4.31 saved them).
bool is_rotary_buffer(const std::string& name) {
  constexpr std::string_view kSuffix = ".rotary_emb.inv_freq";
  return name.size() > kSuffix.size() && name.ends_with(kSuffix);
}

}  // namespace

std::string hf_config_json(const ModelConfig& model, DType dtype) {
  const bool hybrid = has_linear_layers(model);
  json j = {
      {"architectures", json::array({hybrid ? "MementoLlamaForCausalLM" : "LlamaForCausalLM"})},
      {"model_type", std::string(hybrid ? kHybridModelType : kLlamaModelType)},
      {"attention_bias", false},
      {"attention_dropout", 0.0},
      {"head_dim", model.head_size()},
      {"hidden_act", "silu"},
      {"hidden_size", model.dim},
      {"initializer_range", model.init_std},
      {"intermediate_size", model.ffn_dim},
      {"max_position_embeddings", model.max_seq_len},
      {"mlp_bias", false},
      {"num_attention_heads", model.n_heads},
      {"num_hidden_layers", model.n_layers},
      {"num_key_value_heads", model.n_kv_heads},
      {"pretraining_tp", 1},
      {"rms_norm_eps", model.norm_eps},
      {"rope_scaling", nullptr},
      {"rope_theta", model.rope_theta},
      {"tie_word_embeddings", model.tie_embeddings},
      {"torch_dtype", torch_dtype_name(dtype)},
      {"use_cache", true},
      {"vocab_size", model.vocab_size},
  };
  if (hybrid) {
    json pattern = json::array();
    for (AttentionKind k : model.layer_pattern) pattern.push_back(attention_kind_name(k));
    j["memento_layer_pattern"] = pattern;
    j["memento_linear_attention"] = {{"decay", model.linear_decay},
                                     {"output_norm", model.linear_output_norm},
                                     {"chunk", model.linear_chunk}};
  }
  return j.dump(2) + "\n";
}

ModelConfig parse_hf_config(const std::string& json_text, const std::string& source) {
  json root;
  try {
    root = json::parse(json_text);
  } catch (const json::parse_error& e) {
    throw CheckpointError(concat(source, ": byte offset ", e.byte, ": not valid JSON: ", e.what()));
  }
  MEMENTO_EXPECT(root.is_object(), CheckpointError, source, ": not a JSON object");
  const HfKeys keys(root, source);
  const auto model_type = keys.get<std::string>("model_type", std::string(kLlamaModelType));
  if (model_type != kLlamaModelType && model_type != kHybridModelType)
    keys.refuse("model_type", concat("is '", model_type, "': expected ", kLlamaModelType, " or ",
                                     kHybridModelType));
  if (keys.get<bool>("attention_bias", false))
    keys.refuse("attention_bias", "is true: not supported");
  if (keys.get<bool>("mlp_bias", false)) keys.refuse("mlp_bias", "is true: not supported");
  if (keys.get<std::string>("hidden_act", std::string("silu")) != "silu")
    keys.refuse("hidden_act", "is not silu: Memento's MLP is SwiGLU");
  // transformers 4.x: rope_scaling, null or {"rope_type": "default"}; 5.x: rope_parameters.
  double rope_theta = keys.get<double>("rope_theta", 10000.0);
  for (const char* key : {"rope_scaling", "rope_parameters"}) {
    if (!root.contains(key) || root[key].is_null()) continue;
    const json& rope = root[key];
    const std::string type =
        rope.is_object() ? rope.value("rope_type", rope.value("type", "")) : "";
    if (type != "default")
      keys.refuse(key, "is " + rope.dump() + ": only default RoPE is supported");
    if (rope.contains("rope_theta") && rope["rope_theta"].is_number())
      rope_theta = rope["rope_theta"].get<double>();
  }

  ModelConfig m;
  m.vocab_size = keys.get<int64_t>("vocab_size");
  m.dim = keys.get<int64_t>("hidden_size");
  m.ffn_dim = keys.get<int64_t>("intermediate_size");
  m.n_layers = keys.get<int64_t>("num_hidden_layers");
  m.n_heads = keys.get<int64_t>("num_attention_heads");
  m.n_kv_heads = keys.get<int64_t>("num_key_value_heads", m.n_heads);
  m.max_seq_len = keys.get<int64_t>("max_position_embeddings", int64_t{2048});
  m.rope_theta = rope_theta;
  m.norm_eps = keys.get<double>("rms_norm_eps", 1e-6);
  m.init_std = keys.get<double>("initializer_range", 0.02);
  m.tie_embeddings = keys.get<bool>("tie_word_embeddings", false);
  MEMENTO_EXPECT(m.n_heads > 0 && m.dim % m.n_heads == 0, CheckpointError, source,
                 ": 'hidden_size' ", m.dim, " is not a multiple of 'num_attention_heads' ",
                 m.n_heads);
  if (keys.get<int64_t>("head_dim", m.dim / m.n_heads) != m.dim / m.n_heads)
    keys.refuse("head_dim",
                concat("is not hidden_size / num_attention_heads = ", m.dim / m.n_heads));

  const bool hybrid = model_type == kHybridModelType;
  if (hybrid != root.contains("memento_layer_pattern"))
    keys.refuse("memento_layer_pattern",
                concat(hybrid ? "is missing" : "is present", ", with model_type ", model_type));
  if (hybrid) {
    const json& pattern = root["memento_layer_pattern"];
    MEMENTO_EXPECT(pattern.is_array() && !pattern.empty(), CheckpointError, source,
                   ": 'memento_layer_pattern' must be a list of softmax and linear");
    m.layer_pattern.clear();
    for (const json& k : pattern) {
      MEMENTO_EXPECT(k == "softmax" || k == "linear", CheckpointError, source,
                     ": 'memento_layer_pattern' holds ", k.dump(), ": expected softmax or linear");
      m.layer_pattern.push_back(k == "softmax" ? AttentionKind::kSoftmax : AttentionKind::kLinear);
    }
    const json linear = root.value("memento_linear_attention", json::object());
    MEMENTO_EXPECT(linear.is_object(), CheckpointError, source,
                   ": 'memento_linear_attention' is not an object");
    const HfKeys lin(linear, source);
    m.linear_decay = lin.get<bool>("decay", m.linear_decay);
    m.linear_output_norm = lin.get<bool>("output_norm", m.linear_output_norm);
    m.linear_chunk = lin.get<int64_t>("chunk", m.linear_chunk);
  }
  try {
    m.validate("model");
  } catch (const ConfigError& e) {
    throw CheckpointError(concat(source, ": describes no valid model: ", e.what()));
  }
  return m;
}

void load_hf_weights(const std::string& dir, const ModelConfig& model, ParameterSet& params) {
  MEMENTO_CHECK(params.allocated(), "load_hf_weights: the parameters are not allocated");
  const std::string config_path = checkpoint::join_path(dir, kHfConfigFile);
  const ModelConfig hf = parse_hf_config(read_text_file(config_path), config_path);

  // Everything that changes what the weights mean or their shapes must agree.
  std::vector<std::string> diffs;
  compare(diffs, "vocab_size", "vocab_size", hf.vocab_size, model.vocab_size);
  compare(diffs, "hidden_size", "dim", hf.dim, model.dim);
  compare(diffs, "intermediate_size", "ffn_dim", hf.ffn_dim, model.ffn_dim);
  compare(diffs, "num_hidden_layers", "n_layers", hf.n_layers, model.n_layers);
  compare(diffs, "num_attention_heads", "n_heads", hf.n_heads, model.n_heads);
  compare(diffs, "num_key_value_heads", "n_kv_heads", hf.n_kv_heads, model.n_kv_heads);
  compare(diffs, "rms_norm_eps", "norm_eps", hf.norm_eps, model.norm_eps);
  compare(diffs, "rope_theta", "rope_theta", hf.rope_theta, model.rope_theta);
  compare(diffs, "tie_word_embeddings", "tie_embeddings", hf.tie_embeddings, model.tie_embeddings);
  bool same_layers = true;
  for (int64_t l = 0; l < std::max(hf.n_layers, model.n_layers); ++l)
    same_layers = same_layers && hf.layer_kind(l) == model.layer_kind(l);
  if (!same_layers)
    diffs.push_back("memento_layer_pattern = " + pattern_text(hf) +
                    (has_linear_layers(hf) ? "" : " (a transformers Llama)") +
                    " but model.layer_pattern = " + pattern_text(model));
  if (has_linear_layers(model) && has_linear_layers(hf)) {
    compare(diffs, "memento_linear_attention.decay", "linear_attention.decay", hf.linear_decay,
            model.linear_decay);
    compare(diffs, "memento_linear_attention.output_norm", "linear_attention.output_norm",
            hf.linear_output_norm, model.linear_output_norm);
  }
  MEMENTO_EXPECT(diffs.empty(), CheckpointError, config_path,
                 ": describes another model: ", listed(diffs));
  if (hf.max_seq_len != model.max_seq_len)
    MEMENTO_LOG_INFO(config_path, ": max_position_embeddings = ", hf.max_seq_len,
                     ", model.max_seq_len = ", model.max_seq_len, " (RoPE needs no weights)");

  const checkpoint::SafetensorsModel files = checkpoint::open_safetensors_model(dir);
  auto file_of = [&](const std::string& name) {
    return files.files[files.tensors.at(name).first].path();
  };
  std::vector<std::string> missing, unexpected, misshapen;
  for (const auto& e : params.entries()) {
    const auto it = files.tensors.find(e.name);
    if (it == files.tensors.end()) {
      missing.push_back(e.name);
      continue;
    }
    const checkpoint::SafetensorsTensorInfo& t = *it->second.second;
    if (!(t.shape == e.shape) || !dtype_is_float(t.dtype))
      misshapen.push_back(concat(e.name, " in ", file_of(e.name), ": expected ", e.shape.str(),
                                 " of a float dtype, found ", t.shape.str(), " ",
                                 checkpoint::safetensors_dtype_name(t.dtype)));
  }
  // A tied lm_head may be stored anyway (some exports do): it must then equal the embedding.
  const bool stored_tied_head = model.tie_embeddings && files.tensors.count("lm_head.weight") != 0;
  for (const auto& [name, where] : files.tensors) {
    if (params.find(name) == nullptr && !is_rotary_buffer(name) &&
        !(stored_tied_head && name == "lm_head.weight"))
      unexpected.push_back(concat(name, " (", file_of(name), ")"));
  }
  std::string problems;
  auto add = [&](const char* what, const std::vector<std::string>& items) {
    if (!items.empty())
      problems +=
          concat(problems.empty() ? "" : "; ", items.size(), " ", what, ": ", listed(items));
  };
  add("missing", missing);
  add("unexpected", unexpected);
  add("with the wrong shape or dtype", misshapen);
  MEMENTO_EXPECT(problems.empty(), CheckpointError, dir,
                 ": the weights do not fit the model: ", problems);

  if (stored_tied_head) {
    const auto& [fe, embed] = files.tensors.at("model.embed_tokens.weight");
    const auto& [fh, head] = files.tensors.at("lm_head.weight");
    bool same = embed->dtype == head->dtype && embed->shape == head->shape;
    if (same) {
      const Tensor a = files.files[fe].read(embed->name);
      const Tensor b = files.files[fh].read(head->name);
      same = std::memcmp(a.view().raw(), b.view().raw(), a.bytes()) == 0;
    }
    MEMENTO_EXPECT(same, CheckpointError, file_of("lm_head.weight"),
                   ": tensor 'lm_head.weight' differs from model.embed_tokens.weight, but the ",
                   "model ties them (model.tie_embeddings: true)");
  }
  Tensor staging;  // host copy of one tensor when the parameters live on a GPU
  for (size_t i = 0; i < params.entries().size(); ++i) {
    const auto& e = params.entries()[i];
    const TensorView dst = params.value(ParamRef{static_cast<int>(i)});
    const size_t f = files.tensors.at(e.name).first;
    if (dst.device().is_cpu()) {
      files.files[f].read(e.name, dst);
    } else {
      staging = Tensor::empty(e.shape, dst.dtype());
      files.files[f].read(e.name, staging);
      copy(staging, dst);
    }
  }
  params.refresh_compute();
  MEMENTO_LOG_INFO("loaded ", params.entries().size(), " Hugging Face tensors from ", dir, " (",
                   files.files.size(), " file", files.files.size() == 1 ? "" : "s", ")");
}

}  // namespace memento
