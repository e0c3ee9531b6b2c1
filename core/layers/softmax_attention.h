#pragma once

#include <string>

#include "core/layers/linear.h"
#include "core/layers/qkv_projection.h"

namespace memento {

// Causal softmax self-attention with grouped-query heads and RoPE (rotate-half convention, as
// Hugging Face's Llama: pairs (i, i + HS/2), inv_freq = theta^(-2i/HS), positions 0..T-1).
// Parameters "<name>.q_proj.weight" (NH*HS, C), "<name>.k_proj.weight" (NKV*HS, C),
// "<name>.v_proj.weight" (NKV*HS, C), "<name>.o_proj.weight" (C, NH*HS).
// forward: x (B, T, C) -> (B, T, C). Saves x, rotated q and k, v, the attention output and the
// softmax statistics (log-sum-exp per row) so backward recomputes probabilities.
// backward: dy (B, T, C) -> dx (B, T, C).
class SoftmaxAttention {
 public:
  SoftmaxAttention(ParameterSet& params, const std::string& name, AttentionDims dims,
                   float rope_theta, float init_std, float out_init_std);
  Tensor forward(LayerContext& ctx, const Tensor& x);
  Tensor backward(LayerContext& ctx, const Tensor& dy);

 private:
  std::string name_;
  AttentionDims dims_;
  float rope_theta_;
  QkvProjection qkv_;
  Linear o_proj_;
};

}  // namespace memento
