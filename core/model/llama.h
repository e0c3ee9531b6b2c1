// Llama-style decoder built from a ModelConfig: token embedding, L blocks of
// (RMSNorm -> attention -> residual, RMSNorm -> SwiGLU MLP -> residual), final RMSNorm, lm_head.
// Each block's attention is softmax (Llama) or linear (LASP-2's Linear-Llama) by the config's
// layer pattern. Parameter names and shapes are Hugging Face's Llama, so weights map one to one.
#pragma once

#include <functional>
#include <memory>
#include <vector>

#include "core/layers/embedding.h"
#include "core/layers/linear.h"
#include "core/layers/linear_attention.h"
#include "core/layers/rmsnorm.h"
#include "core/layers/softmax_attention.h"
#include "core/layers/swiglu_mlp.h"
#include "core/model/model_config.h"
#include "core/ops/cross_entropy.h"

namespace memento {

class LlamaModel {
 public:
  // Declares every parameter; call params().allocate(...) and params().initialize(seed) next.
  explicit LlamaModel(const ModelConfig& config);
  ~LlamaModel();
  LlamaModel(const LlamaModel&) = delete;
  LlamaModel& operator=(const LlamaModel&) = delete;

  const ModelConfig& config() const { return config_; }
  ParameterSet& params() { return params_; }
  const ParameterSet& params() const { return params_; }

  // Told during backward that every gradient at flat offsets >= offset is final for this
  // micro-batch: gradient reduction starts its buckets from it.
  using GradsFinalHook = std::function<void(int64_t offset)>;

  // tokens, targets (B, T) i32. Forward, loss and backward of one micro-batch: parameter
  // gradients accumulate (+=) the gradient of grad_scale * (sum of token losses).
  ops::CrossEntropyResult forward_backward(ActivationStore& store, const Tensor& tokens,
                                           const Tensor& targets, double grad_scale,
                                           const GradsFinalHook& grads_final = nullptr);
  // Loss without gradients (evaluation); saves nothing.
  ops::CrossEntropyResult forward_loss(const Tensor& tokens, const Tensor& targets);
  // Logits (B, T, V) of a forward pass without gradients (sampling).
  Tensor forward_logits(const Tensor& tokens);

  // Parameters outside the embedding table (the lm_head counts, unless tied).
  int64_t non_embedding_params() const;
  // Training FLOPs per token at sequence length T: 6 N_non_embedding + 6 L T C (attention).
  double flops_per_token(int64_t T) const;

 private:
  struct Block;
  struct ResidualStream;
  Tensor forward(LayerContext& ctx, const Tensor& tokens);  // (B, T, V) logits
  Tensor lm_head_forward(LayerContext& ctx, const Tensor& x);
  Tensor lm_head_backward(LayerContext& ctx, const Tensor& dlogits);
  void backward(LayerContext& ctx, const Tensor& dlogits, const GradsFinalHook& grads_final);

  ModelConfig config_;
  ParameterSet params_;
  std::unique_ptr<Embedding> embed_;
  std::vector<std::unique_ptr<Block>> blocks_;
  std::vector<int64_t> block_offsets_;  // flat offset of each block's first parameter
  std::unique_ptr<RMSNorm> norm_;
  std::unique_ptr<Linear> lm_head_;  // null when tied to the embedding
};

}  // namespace memento
