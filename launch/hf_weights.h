// Hugging Face Llama weights: a model directory holding config.json (LlamaForCausalLM) and
// model.safetensors, or model-0000i-of-0000N.safetensors shards plus model.safetensors.index.json.
// `trainer-data export-hf` writes one from a trainer checkpoint; load_hf_weights starts training
// from one. Parameter names are Hugging Face's already (core/parameters.h), so tensors map one to
// one. docs/hf-weights.md has the format, the keys and the hybrid-model extension.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "core/model/model_config.h"
#include "core/parameters.h"

namespace memento {

inline constexpr std::string_view kHfConfigFile = "config.json";

// config.json for `model` with its tensors stored in `dtype` (torch_dtype). A model with
// linear-attention layers is no transformers Llama: it gets model_type "memento_llama",
// architectures ["MementoLlamaForCausalLM"] and the keys memento_layer_pattern and
// memento_linear_attention (so that transformers refuses it instead of computing softmax).
std::string hf_config_json(const ModelConfig& model, DType dtype);

// The model a config.json describes (a missing optional key takes transformers' LlamaConfig
// default; dtype and device keep ModelConfig's). Refuses what Memento cannot compute:
// attention_bias, mlp_bias, rope_scaling, hidden_act other than silu, head_dim other than
// hidden_size / num_attention_heads, a model_type other than llama / memento_llama. Throws
// CheckpointError naming `source` and the key.
ModelConfig parse_hf_config(const std::string& json_text, const std::string& source);

// Fills `params` (allocated, on any device, for a model built from `model`) from the Hugging
// Face directory `dir`. First checks, before writing anything: config.json describes `model`
// (else the keys that differ, both values), and the files hold exactly the parameters with their
// shapes in a float dtype (else every missing, unexpected and misshapen tensor with its file).
// Then reads each tensor into host memory (converting to the parameters' dtype; f32 into f32 is
// bit-exact), copy()s it into its view and refreshes the compute copy. Throws CheckpointError.
void load_hf_weights(const std::string& dir, const ModelConfig& model, ParameterSet& params);

struct HfExportOptions {
  DType dtype = DType::kF32;                 // stored dtype: f32 (bit-exact) or bf16
  uint64_t max_shard_bytes = 5'000'000'000;  // transformers' default max_shard_size, "5GB"
};

// Writes config.json and the weights of a trainer checkpoint (a step_* directory, or a checkpoint
// root, whose latest complete checkpoint is used) into out_dir, resharding whatever data-parallel
// world saved it. Holds one shard's parameters in memory at a time. Returns the files written.
std::vector<std::string> export_hf(const std::string& checkpoint, const std::string& out_dir,
                                   const HfExportOptions& options = {});

// Sizes as transformers' max_shard_size takes them: "5GB" (10^9), "500MiB" (2^20), "1.5GB",
// "1000" (bytes). Throws ConfigError naming `what` for anything else.
uint64_t parse_byte_size(const std::string& text, const std::string& what = "--max-shard-size");

// `trainer-data export-hf ARGS...` (args after the command name): parses them, exports, prints
// what it wrote; returns the exit code. Throws on bad arguments, as trainer-data's commands do.
int run_export_hf(const std::vector<std::string>& args);

}  // namespace memento
