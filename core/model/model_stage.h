// A pipeline stage of a Llama-style model: a range of its transformer blocks, with or without the
// token embedding (the first stage) and the final norm and output head (the last stage). The
// whole model is the one stage that has everything (core/model/llama.h); a pipeline-parallel rank
// builds the stage its pp coordinate owns. Each stage owns its parameters (one ParameterSet, flat
// buffers of its own); initialisation is keyed by parameter name, so every split of the model
// into stages starts from the same weights.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "core/layers/embedding.h"
#include "core/layers/linear.h"
#include "core/layers/rmsnorm.h"
#include "core/model/model_config.h"
#include "core/model/transformer_block.h"
#include "core/ops/cross_entropy.h"
#include "core/parallel/parallel_context.h"

namespace memento {

// Which part of the model a stage holds.
struct StageLayers {
  int64_t first = 0;      // first block
  int64_t end = -1;       // one past the last block; -1: to the model's last
  bool embedding = true;  // the token embedding (only the first stage)
  bool head = true;       // the final norm and the output head (only the last stage)
};

class ModelStage {
 public:
  // Told during backward that the gradients of `range` (flat offsets of this stage's buffers) are
  // final for the micro-batch: gradient reduction starts the buckets that are all final. The
  // ranges a backward reports tile the whole buffer, padding included.
  using GradsFinalHook = std::function<void(FlatRange range)>;

  // Declares the parameters of `layers` of `config`; call params().allocate(...) and
  // params().initialize(seed) next. Throws ConfigError for an empty or out-of-range layer range,
  // and for a tied head in a stage without the embedding (not yet supported).
  ModelStage(const ModelConfig& config, StageLayers layers,
             const parallel::ParallelContext& parallel = parallel::ParallelContext::single());
  ~ModelStage();
  ModelStage(const ModelStage&) = delete;
  ModelStage& operator=(const ModelStage&) = delete;

  const ModelConfig& config() const { return config_; }
  const StageLayers& layers() const { return layers_; }
  ParameterSet& params() { return params_; }
  const ParameterSet& params() const { return params_; }

  // One micro-batch's forward: input is tokens (B, T) i32 with the embedding, else the previous
  // stage's output (B, T, C). Returns logits (B, T, V) with the head, else the residual stream
  // (B, T, C) for the next stage. Saves what backward needs in `store` under `micro_batch`.
  Tensor forward(ActivationStore& store, int64_t micro_batch, const Tensor& input);
  // The same micro-batch's backward: dout is dlogits (B, T, V) with the head, else the gradient of
  // this stage's output (B, T, C). Parameter gradients accumulate (+=). Returns the gradient of
  // the input (B, T, C), or an undefined tensor with the embedding.
  Tensor backward(ActivationStore& store, int64_t micro_batch, const Tensor& dout,
                  const GradsFinalHook& grads_final = nullptr);
  // forward without gradients (evaluation, sampling): saves nothing.
  Tensor forward_inference(const Tensor& input);

 private:
  Tensor run_forward(LayerContext& ctx, const Tensor& input);
  FlatRange block_range(size_t block) const;  // the flat range of blocks_[block]'s parameters

  ModelConfig config_;
  StageLayers layers_;
  parallel::ParallelContext parallel_;  // three borrowed groups
  ParameterSet params_;
  std::unique_ptr<Embedding> embed_;  // null unless layers_.embedding
  std::vector<std::unique_ptr<TransformerBlock>> blocks_;
  std::vector<int64_t> block_offsets_;  // flat offset of each block's first parameter
  std::unique_ptr<RMSNorm> norm_;       // null unless layers_.head
  std::unique_ptr<Linear> lm_head_;     // own weight, or tied to the embedding
};

// Forward, loss and backward of one micro-batch through a stage that has both the embedding and
// the head (the one-stage case): tokens, targets (B, T) i32. Returns the loss of the micro-batch.
ops::CrossEntropyResult forward_loss_backward(ModelStage& stage, ActivationStore& store,
                                              int64_t micro_batch, const Tensor& tokens,
                                              const Tensor& targets, double grad_scale,
                                              const ModelStage::GradsFinalHook& grads_final);

// The loss, its own step between the last stage's forward and backward: cross-entropy of logits
// (B, T, V) against targets (B, T) i32, turning the logits into dlogits = grad_scale * d(sum of
// token losses)/dlogits in place.
ops::CrossEntropyResult loss_and_gradient(const Tensor& logits, const Tensor& targets,
                                          double grad_scale);

}  // namespace memento
