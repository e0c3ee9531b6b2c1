// One decoder block of a Llama-style model: RMSNorm -> attention (softmax or linear, by the
// config's layer pattern) -> residual, RMSNorm -> SwiGLU MLP -> residual. Parameter names are
// Hugging Face's ("model.layers.<i>...."), so weights map one to one.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "core/layers/linear_attention.h"
#include "core/layers/rmsnorm.h"
#include "core/layers/softmax_attention.h"
#include "core/layers/swiglu_mlp.h"
#include "core/model/model_config.h"

namespace memento {

// The residual stream between blocks, as x + pending: each block leaves its last residual add
// for the next norm to fuse (pending undefined: none). sum() materialises it (a stage boundary).
struct ResidualStream {
  Tensor x;        // (B, T, C)
  Tensor pending;  // (B, T, C) or undefined
  const Tensor* pending_or_null() const { return pending.defined() ? &pending : nullptr; }
};

class TransformerBlock {
 public:
  // Declares the block's parameters for layer `layer` of `config`.
  TransformerBlock(ParameterSet& params, const ModelConfig& config, int64_t layer);
  TransformerBlock(const TransformerBlock&) = delete;
  TransformerBlock& operator=(const TransformerBlock&) = delete;

  // x (B, T, C) -> h = x + attn(norm(x)) -> out = h + mlp(norm(h)). Each residual add is fused
  // into the norm that reads its sum, in place on a tensor nothing has saved yet: the input's
  // pending add in attn_norm, h's in mlp_norm, and out's in the next block's attn_norm (or the
  // final norm), which is why the block returns out as {mlp(norm(h)), h}.
  ResidualStream forward(LayerContext& ctx, const ResidualStream& in);
  // dout (B, T, C) -> dx (B, T, C). Each norm's backward adds the residual path's gradient.
  Tensor backward(LayerContext& ctx, const Tensor& dout);

  const std::string& name() const { return name_; }  // "model.layers.<i>"
  // Projections that write into the residual stream start smaller, as in GPT-2.
  static float out_init_std(const ModelConfig& config);

 private:
  std::string name_;
  RMSNorm attn_norm_;
  std::unique_ptr<SoftmaxAttention> softmax_attn_;  // exactly one of the two attentions
  std::unique_ptr<LinearAttention> linear_attn_;
  RMSNorm mlp_norm_;
  SwiGLUMLP mlp_;
};

}  // namespace memento
