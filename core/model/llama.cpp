#include "core/model/llama.h"

namespace memento {

LlamaModel::LlamaModel(const ModelConfig& config, const parallel::ParallelContext& parallel)
    : stage_(config, StageLayers{}, parallel) {}

ops::CrossEntropyResult LlamaModel::forward_backward(ActivationStore& store, const Tensor& tokens,
                                                     const Tensor& targets, double grad_scale,
                                                     const GradsFinalHook& grads_final,
                                                     int64_t micro_batch) {
  return forward_loss_backward(stage_, store, micro_batch, tokens, targets, grad_scale,
                               grads_final);
}

ops::CrossEntropyResult LlamaModel::forward_loss(const Tensor& tokens, const Tensor& targets) {
  const Tensor logits = forward_logits(tokens);
  return ops::cross_entropy(logits.view().reshape(Shape{tokens.numel(), config().vocab_size}),
                            targets.view().reshape(Shape{tokens.numel()}), TensorView(), 0.0);
}

int64_t LlamaModel::non_embedding_params() const {
  const auto* embed = params().find("model.embed_tokens.weight");
  return params().numel() - embed->shape.numel();
}

double LlamaModel::flops_per_token(int64_t T) const {
  const ModelConfig& c = config();
  return 6.0 * static_cast<double>(non_embedding_params()) +
         6.0 * static_cast<double>(c.n_layers * T * c.dim);
}

}  // namespace memento
