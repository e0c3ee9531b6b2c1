// A Llama-style decoder built from a ModelConfig: token embedding, L blocks of
// (RMSNorm -> attention -> residual, RMSNorm -> SwiGLU MLP -> residual), final RMSNorm, lm_head.
// Each block's attention is softmax (Llama) or linear (LASP-2's Linear-Llama) by the config's
// layer pattern. Parameter names and shapes are Hugging Face's Llama, so weights map one to one.
// The whole model is one ModelStage (core/model/model_stage.h) holding every layer; pipeline
// parallelism builds one stage per rank instead.
#pragma once

#include "core/model/model_stage.h"

namespace memento {

class LlamaModel {
 public:
  // Declares every parameter; call params().allocate(...) and params().initialize(seed) next.
  explicit LlamaModel(const ModelConfig& config, const parallel::ParallelContext& parallel =
                                                     parallel::ParallelContext::single());

  const ModelConfig& config() const { return stage_.config(); }
  ParameterSet& params() { return stage_.params(); }
  const ParameterSet& params() const { return stage_.params(); }
  ModelStage& stage() { return stage_; }

  using GradsFinalHook = ModelStage::GradsFinalHook;

  // tokens, targets (B, T) i32. Forward, loss and backward of micro-batch `micro_batch`: parameter
  // gradients accumulate (+=) the gradient of grad_scale * (sum of token losses).
  ops::CrossEntropyResult forward_backward(ActivationStore& store, const Tensor& tokens,
                                           const Tensor& targets, double grad_scale,
                                           const GradsFinalHook& grads_final = nullptr,
                                           int64_t micro_batch = 0);
  // Loss without gradients (evaluation); saves nothing.
  ops::CrossEntropyResult forward_loss(const Tensor& tokens, const Tensor& targets);
  // Logits (B, T, V) of a forward pass without gradients (sampling).
  Tensor forward_logits(const Tensor& tokens) { return stage_.forward_inference(tokens); }

  // Parameters outside the embedding table (the lm_head counts, unless tied).
  int64_t non_embedding_params() const;
  // Training FLOPs per token at sequence length T: 6 N_non_embedding + 6 L T C (attention).
  double flops_per_token(int64_t T) const;

 private:
  ModelStage stage_;
};

}  // namespace memento
