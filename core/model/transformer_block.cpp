#include "core/model/transformer_block.h"

#include <cmath>

namespace memento {
namespace {
std::string block_name(int64_t layer) { return "model.layers." + std::to_string(layer); }
}  // namespace

float TransformerBlock::out_init_std(const ModelConfig& c) {
  return static_cast<float>(c.init_std / std::sqrt(2.0 * static_cast<double>(c.n_layers)));
}

TransformerBlock::TransformerBlock(ParameterSet& p, const ModelConfig& c, int64_t layer)
    : name_(block_name(layer)),
      attn_norm_(p, name_ + ".input_layernorm", c.dim, c.norm_eps),
      mlp_norm_(p, name_ + ".post_attention_layernorm", c.dim, c.norm_eps),
      mlp_(p, name_ + ".mlp", c.dim, c.ffn_dim, static_cast<float>(c.init_std), out_init_std(c)) {
  const AttentionDims dims{c.dim, c.n_heads, c.n_kv_heads, c.head_size()};
  const std::string name = name_ + ".self_attn";
  if (c.layer_kind(layer) == AttentionKind::kSoftmax) {
    softmax_attn_ =
        std::make_unique<SoftmaxAttention>(p, name, dims, static_cast<float>(c.rope_theta),
                                           static_cast<float>(c.init_std), out_init_std(c));
  } else {
    const LinearAttentionOptions options{c.linear_decay, c.linear_output_norm, c.linear_chunk,
                                         c.norm_eps};
    linear_attn_ = std::make_unique<LinearAttention>(
        p, name, dims, options, static_cast<float>(c.init_std), out_init_std(c));
  }
}

ResidualStream TransformerBlock::forward(LayerContext& ctx, const ResidualStream& in) {
  const Tensor normed = attn_norm_.forward(ctx, in.x, in.pending_or_null());
  Tensor attn =
      softmax_attn_ ? softmax_attn_->forward(ctx, normed) : linear_attn_->forward(ctx, normed);
  Tensor m = mlp_.forward(ctx, mlp_norm_.forward(ctx, attn, &in.x));  // attn becomes h
  return {std::move(m), std::move(attn)};
}

Tensor TransformerBlock::backward(LayerContext& ctx, const Tensor& dout) {
  const Tensor dh = mlp_norm_.backward(ctx, mlp_.backward(ctx, dout), &dout);
  const Tensor dattn =
      softmax_attn_ ? softmax_attn_->backward(ctx, dh) : linear_attn_->backward(ctx, dh);
  return attn_norm_.backward(ctx, dattn, &dh);
}

}  // namespace memento
