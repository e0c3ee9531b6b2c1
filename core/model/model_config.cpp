#include "core/model/model_config.h"

#include <algorithm>

#include "core/error.h"

namespace memento {

std::string attention_kind_name(AttentionKind kind) {
  return kind == AttentionKind::kSoftmax ? "softmax" : "linear";
}

void ModelConfig::validate(const std::string& prefix) const {
  auto positive = [&](int64_t v, const char* key) {
    MEMENTO_EXPECT(v > 0, ConfigError, "config: ", prefix, ".", key, ": must be positive, got ", v);
  };
  positive(vocab_size, "vocab_size");
  positive(dim, "dim");
  positive(n_layers, "n_layers");
  positive(n_heads, "n_heads");
  positive(n_kv_heads, "n_kv_heads");
  positive(ffn_dim, "ffn_dim");
  positive(max_seq_len, "max_seq_len");
  positive(linear_chunk, "linear_attention.chunk");
  MEMENTO_EXPECT(dim % n_heads == 0, ConfigError, "config: ", prefix, ".dim: ", dim,
                 " is not divisible by ", prefix, ".n_heads = ", n_heads);
  MEMENTO_EXPECT(head_size() % 2 == 0, ConfigError, "config: ", prefix,
                 ".dim / n_heads must be even for RoPE, got head size ", head_size());
  MEMENTO_EXPECT(n_heads % n_kv_heads == 0, ConfigError, "config: ", prefix, ".n_heads: ", n_heads,
                 " is not divisible by ", prefix, ".n_kv_heads = ", n_kv_heads);
  MEMENTO_EXPECT(!layer_pattern.empty(), ConfigError, "config: ", prefix,
                 ".layer_pattern: must list at least one of softmax, linear");
  MEMENTO_EXPECT(rope_theta > 0, ConfigError, "config: ", prefix, ".rope_theta: must be positive");
  MEMENTO_EXPECT(norm_eps > 0, ConfigError, "config: ", prefix, ".norm_eps: must be positive");
  MEMENTO_EXPECT(init_std > 0, ConfigError, "config: ", prefix, ".init_std: must be positive");
  MEMENTO_EXPECT(device == "cpu" || device == "cuda", ConfigError, "config: ", prefix,
                 ".device: expected cpu or cuda, got '", device, "'");
  if (on_cuda()) {
    MEMENTO_EXPECT(dtype == DType::kF32 || dtype == DType::kBF16, ConfigError, "config: ", prefix,
                   ".dtype: the CUDA backend computes in bf16 (mixed precision) or f32, got ",
                   dtype_name(dtype));
    // The GPU kernels' head sizes (core/cuda/attention.h, core/cuda/linear_attention.h).
    const int64_t hs = head_size();
    const bool any_linear = std::find(layer_pattern.begin(), layer_pattern.end(),
                                      AttentionKind::kLinear) != layer_pattern.end();
    const bool any_softmax = std::find(layer_pattern.begin(), layer_pattern.end(),
                                       AttentionKind::kSoftmax) != layer_pattern.end();
    MEMENTO_EXPECT(!any_linear || hs == 16 || hs == 32 || hs == 64 || hs == 128, ConfigError,
                   "config: ", prefix, ".n_heads: linear attention on a GPU needs a head size ",
                   "(dim / n_heads) of 16, 32, 64 or 128, got ", hs);
    MEMENTO_EXPECT(!any_linear || !linear_decay || n_heads <= 128, ConfigError, "config: ", prefix,
                   ".n_heads: linear attention with decay on a GPU takes at most 128 ",
                   "heads, got ", n_heads);
    MEMENTO_EXPECT(!any_softmax || hs <= 256, ConfigError, "config: ", prefix,
                   ".n_heads: softmax attention on a GPU needs a head size of at most 256, got ",
                   hs);
  } else {
    MEMENTO_EXPECT(dtype == DType::kF32 || dtype == DType::kF64, ConfigError, "config: ", prefix,
                   ".dtype: the CPU backend computes in f32 or f64, got ", dtype_name(dtype),
                   dtype == DType::kBF16 ? " (bf16 mixed precision needs model.device: cuda)" : "");
  }
}

}  // namespace memento
