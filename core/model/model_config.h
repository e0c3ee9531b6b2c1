// The shape of a Llama-style model: softmax attention, linear attention, or a hybrid with a
// per-layer pattern. Parsed from the `model:` section of the YAML config (launch/config.h).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/dtype.h"

namespace memento {

enum class AttentionKind : uint8_t { kSoftmax, kLinear };

struct ModelConfig {
  int64_t vocab_size = 256;   // V
  int64_t dim = 128;          // C
  int64_t n_layers = 2;       // L
  int64_t n_heads = 4;        // NH
  int64_t n_kv_heads = 4;     // NKV; n_heads % n_kv_heads == 0
  int64_t ffn_dim = 344;      // F of the SwiGLU MLP
  int64_t max_seq_len = 256;  // longest T the model is trained or sampled at
  double rope_theta = 10000.0;
  double norm_eps = 1e-5;
  double init_std = 0.02;
  bool tie_embeddings = false;  // lm_head shares model.embed_tokens.weight
  // Attention per layer, repeated cyclically: {linear, linear, linear, softmax} makes every
  // fourth layer softmax. {softmax} is Llama, {linear} the linear-attention Llama.
  std::vector<AttentionKind> layer_pattern = {AttentionKind::kSoftmax};
  bool linear_decay = true;        // fixed per-head decay in linear-attention layers
  bool linear_output_norm = true;  // per-head RMSNorm of the linear-attention output
  int64_t linear_chunk = 64;       // chunk length of the chunked linear-attention form
  // f32 or f64: parameters and activations in that dtype (the CPU backend, or f32 on a GPU).
  // bf16 (GPU only): mixed precision, fp32 master weights, gradients and optimizer states,
  // bf16 weight copies and activations, fp32 accumulation.
  DType dtype = DType::kF32;
  std::string device = "cpu";  // cpu or cuda (each rank takes GPU local_rank % device count)

  bool on_cuda() const { return device == "cuda"; }
  DType master_dtype() const { return dtype == DType::kBF16 ? DType::kF32 : dtype; }
  DType compute_dtype() const { return dtype; }

  int64_t head_size() const { return dim / n_heads; }  // HS
  AttentionKind layer_kind(int64_t layer) const {
    return layer_pattern[static_cast<size_t>(layer) % layer_pattern.size()];
  }
  // Throws ConfigError naming "<prefix>.<key>" for inconsistent values.
  void validate(const std::string& prefix = "model") const;
};

std::string attention_kind_name(AttentionKind kind);  // "softmax" or "linear"

}  // namespace memento
