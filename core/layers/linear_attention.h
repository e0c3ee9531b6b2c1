#pragma once

#include <string>

#include "core/layers/linear.h"
#include "core/layers/softmax_attention.h"

namespace memento {

struct LinearAttentionOptions {
  bool decay = false;        // fixed per-head decay lambda_h = exp(-slope_h), ALiBi-like slopes
  bool output_norm = false;  // per-head RMSNorm of the attention output before o_proj
  int64_t chunk = 64;        // chunk length of the chunked causal form
  // The output norm's epsilon (model.norm_eps), added as given in every dtype (it always was:
  // unlike the block norms, whose fp32 epsilon is rounded, see ops::rmsnorm_eps).
  double output_norm_eps = 1e-5;
};

// Causal linear attention as in LASP-2's Linear-Llama: o_t = sum_{j<=t} lambda^(t-j) (q_t.k_j) v_j
// (identity feature map, no softmax, no RoPE), computed in chunks: a masked quadratic part inside
// each chunk plus q times the running state M = sum k^T v carried across chunks
// (research/algo-parallel-memory.md section 1). Heads: NH query heads, NKV key/value heads (GQA).
// Parameters as SoftmaxAttention, plus "<name>.o_norm.weight" (HS) when output_norm.
// forward: x (B, T, C) -> (B, T, C). Saves x (via the projections), q, k, v and the attention
// output (B, T, NH, HS); with output_norm, o_proj's normalised input is rebuilt from it in
// backward. backward: dy (B, T, C) -> dx (B, T, C).
class LinearAttention {
 public:
  LinearAttention(ParameterSet& params, const std::string& name, AttentionDims dims,
                  LinearAttentionOptions options, float init_std, float out_init_std);
  Tensor forward(LayerContext& ctx, const Tensor& x);
  Tensor backward(LayerContext& ctx, const Tensor& dy);

 private:
  std::string name_;
  AttentionDims dims_;
  LinearAttentionOptions options_;
  QkvProjection qkv_;
  Linear o_proj_;
  ParamRef o_norm_;  // (HS), only when options_.output_norm
};

}  // namespace memento
