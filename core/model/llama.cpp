#include "core/model/llama.h"

#include <cmath>
#include <string>

#include "core/ops/matmul.h"

namespace memento {

// The residual stream between blocks, as x + pending: each block leaves its last residual add
// for the next norm to fuse (pending undefined: none).
struct LlamaModel::ResidualStream {
  Tensor x;        // (B, T, C)
  Tensor pending;  // (B, T, C) or undefined
  const Tensor* pending_or_null() const { return pending.defined() ? &pending : nullptr; }
};

struct LlamaModel::Block {
  RMSNorm attn_norm;
  std::unique_ptr<SoftmaxAttention> softmax_attn;  // exactly one of the two attentions
  std::unique_ptr<LinearAttention> linear_attn;
  RMSNorm mlp_norm;
  SwiGLUMLP mlp;

  Block(ParameterSet& p, const ModelConfig& c, int64_t layer)
      : attn_norm(p, prefix(layer) + ".input_layernorm", c.dim, c.norm_eps),
        mlp_norm(p, prefix(layer) + ".post_attention_layernorm", c.dim, c.norm_eps),
        mlp(p, prefix(layer) + ".mlp", c.dim, c.ffn_dim, static_cast<float>(c.init_std),
            out_std(c)) {
    const AttentionDims dims{c.dim, c.n_heads, c.n_kv_heads, c.head_size()};
    const std::string name = prefix(layer) + ".self_attn";
    if (c.layer_kind(layer) == AttentionKind::kSoftmax) {
      softmax_attn =
          std::make_unique<SoftmaxAttention>(p, name, dims, static_cast<float>(c.rope_theta),
                                             static_cast<float>(c.init_std), out_std(c));
    } else {
      const LinearAttentionOptions options{c.linear_decay, c.linear_output_norm, c.linear_chunk,
                                           c.norm_eps};
      linear_attn = std::make_unique<LinearAttention>(p, name, dims, options,
                                                      static_cast<float>(c.init_std), out_std(c));
    }
  }

  static std::string prefix(int64_t layer) { return "model.layers." + std::to_string(layer); }
  // Projections that write into the residual stream start smaller, as in GPT-2.
  static float out_std(const ModelConfig& c) {
    return static_cast<float>(c.init_std / std::sqrt(2.0 * static_cast<double>(c.n_layers)));
  }

  Tensor attention_forward(LayerContext& ctx, const Tensor& x) {
    return softmax_attn ? softmax_attn->forward(ctx, x) : linear_attn->forward(ctx, x);
  }
  Tensor attention_backward(LayerContext& ctx, const Tensor& dy) {
    return softmax_attn ? softmax_attn->backward(ctx, dy) : linear_attn->backward(ctx, dy);
  }

  // x (B, T, C) -> h = x + attn(norm(x)) -> out = h + mlp(norm(h)). Each residual add is fused
  // into the norm that reads its sum, in place on a tensor nothing has saved yet: x's own (the
  // input's pending add) in attn_norm, h's in mlp_norm, and out's in the next block's attn_norm
  // (or the final norm), which is why the block returns out as {mlp(norm(h)), h}.
  ResidualStream forward(LayerContext& ctx, const ResidualStream& in) {
    Tensor attn = attention_forward(ctx, attn_norm.forward(ctx, in.x, in.pending_or_null()));
    Tensor m = mlp.forward(ctx, mlp_norm.forward(ctx, attn, &in.x));  // attn becomes h
    return {std::move(m), std::move(attn)};
  }

  // dout (B, T, C) -> dx (B, T, C). Each norm's backward adds the residual path's gradient.
  Tensor backward(LayerContext& ctx, const Tensor& dout) {
    const Tensor dh = mlp_norm.backward(ctx, mlp.backward(ctx, dout), &dout);
    return attn_norm.backward(ctx, attention_backward(ctx, dh), &dh);
  }
};

LlamaModel::LlamaModel(const ModelConfig& config) : config_(config) {
  config_.validate();
  const auto std = static_cast<float>(config_.init_std);
  embed_ = std::make_unique<Embedding>(params_, "model.embed_tokens", config_.vocab_size,
                                       config_.dim, std);
  for (int64_t layer = 0; layer < config_.n_layers; ++layer) {
    const size_t first = params_.entries().size();
    blocks_.push_back(std::make_unique<Block>(params_, config_, layer));
    block_offsets_.push_back(params_.entries()[first].offset);
  }
  norm_ = std::make_unique<RMSNorm>(params_, "model.norm", config_.dim, config_.norm_eps);
  if (!config_.tie_embeddings)
    lm_head_ = std::make_unique<Linear>(params_, "lm_head", config_.dim, config_.vocab_size, std);
}

LlamaModel::~LlamaModel() = default;

Tensor LlamaModel::lm_head_forward(LayerContext& ctx, const Tensor& x) {
  if (lm_head_) return lm_head_->forward(ctx, x);
  // Tied: logits = x E^T with the embedding table E (V, C).
  const TensorView E = params_.compute(embed_->weight());
  Tensor logits =
      Tensor::empty(Shape{x.size(0), x.size(1), config_.vocab_size}, x.dtype(), x.device());
  ops::matmul(x, false, E, true, logits);
  if (ctx.training) ctx.store.save("lm_head/x", x);
  return logits;
}

Tensor LlamaModel::lm_head_backward(LayerContext& ctx, const Tensor& dlogits) {
  if (lm_head_) return lm_head_->backward(ctx, dlogits);
  const Tensor x = ctx.store.take("lm_head/x");
  ops::matmul(dlogits, true, x, false, params_.grad(embed_->weight()), 1.0, 1.0);
  Tensor dx = Tensor::empty_like(x);
  ops::matmul(dlogits, false, params_.compute(embed_->weight()), false, dx);
  return dx;
}

Tensor LlamaModel::forward(LayerContext& ctx, const Tensor& tokens) {
  ResidualStream s{embed_->forward(ctx, tokens), Tensor()};  // (B, T, C)
  for (auto& block : blocks_) s = block->forward(ctx, s);
  return lm_head_forward(ctx, norm_->forward(ctx, s.x, s.pending_or_null()));  // (B, T, V)
}

void LlamaModel::backward(LayerContext& ctx, const Tensor& dlogits,
                          const GradsFinalHook& grads_final) {
  auto final_from = [&](int64_t offset) {
    if (grads_final) grads_final(offset);
  };
  // Parameters are declared embedding, blocks, final norm, lm_head: backward finishes them from
  // the end of the flat buffer towards its start.
  Tensor dx = norm_->backward(ctx, lm_head_backward(ctx, dlogits));
  final_from(params_.find("model.norm.weight")->offset);
  for (int64_t layer = config_.n_layers - 1; layer >= 0; --layer) {
    dx = blocks_[layer]->backward(ctx, dx);
    final_from(block_offsets_[layer]);
  }
  embed_->backward(ctx, dx);
  final_from(0);
}

ops::CrossEntropyResult LlamaModel::forward_backward(ActivationStore& store, const Tensor& tokens,
                                                     const Tensor& targets, double grad_scale,
                                                     const GradsFinalHook& grads_final) {
  LayerContext ctx{params_, store, true};
  Tensor logits = forward(ctx, tokens);  // (B, T, V); becomes dlogits in place
  const TensorView rows = logits.view().reshape(Shape{tokens.numel(), config_.vocab_size});
  const ops::CrossEntropyResult result =
      ops::cross_entropy(rows, targets.view().reshape(Shape{tokens.numel()}), rows, grad_scale);
  backward(ctx, logits, grads_final);
  return result;
}

ops::CrossEntropyResult LlamaModel::forward_loss(const Tensor& tokens, const Tensor& targets) {
  const Tensor logits = forward_logits(tokens);
  return ops::cross_entropy(logits.view().reshape(Shape{tokens.numel(), config_.vocab_size}),
                            targets.view().reshape(Shape{tokens.numel()}), TensorView(), 0.0);
}

Tensor LlamaModel::forward_logits(const Tensor& tokens) {
  struct NoStore final : ActivationStore {
    void save(const std::string& key, Tensor) override {
      MEMENTO_CHECK(false, "evaluation saved an activation: ", key);
    }
    Tensor take(const std::string& key) override {
      MEMENTO_CHECK(false, "evaluation took an activation: ", key);
      return {};
    }
    size_t live_bytes() const override { return 0; }
  } no_store;
  LayerContext ctx{params_, no_store, false};
  return forward(ctx, tokens);
}

int64_t LlamaModel::non_embedding_params() const {
  const auto* embed = params_.find("model.embed_tokens.weight");
  return params_.numel() - embed->shape.numel();
}

double LlamaModel::flops_per_token(int64_t T) const {
  return 6.0 * static_cast<double>(non_embedding_params()) +
         6.0 * static_cast<double>(config_.n_layers * T * config_.dim);
}

}  // namespace memento
