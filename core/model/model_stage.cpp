#include "core/model/model_stage.h"

#include <string>

#include "core/ops/elementwise.h"

namespace memento {
namespace {

// The store of a forward without gradients: nothing may be saved or taken.
struct NoStore final : ActivationStore {
  void save(const std::string& key, Tensor) override {
    MEMENTO_CHECK(false, "a forward without gradients saved an activation: ", key);
  }
  Tensor take(const std::string& key) override {
    MEMENTO_CHECK(false, "a forward without gradients took an activation: ", key);
    return {};
  }
  size_t live_bytes() const override { return 0; }
};

constexpr char kEmbeddingLayer[] = "model.embed_tokens";
constexpr char kHeadLayer[] = "lm_head";  // the final norm and the output head

}  // namespace

ModelStage::ModelStage(const ModelConfig& config, StageLayers layers,
                       const parallel::ParallelContext& parallel)
    : config_(config), layers_(layers), parallel_(parallel) {
  config_.validate();
  if (layers_.end < 0) layers_.end = config_.n_layers;
  MEMENTO_EXPECT(
      0 <= layers_.first && layers_.first <= layers_.end && layers_.end <= config_.n_layers,
      ConfigError, "model stage: layers [", layers_.first, ", ", layers_.end,
      ") are not within the model's ", config_.n_layers);
  MEMENTO_EXPECT(layers_.first < layers_.end || layers_.embedding || layers_.head, ConfigError,
                 "model stage: layers [", layers_.first, ", ", layers_.end, ") hold nothing");
  MEMENTO_EXPECT(!(config_.tie_embeddings && layers_.head && !layers_.embedding), ConfigError,
                 "model.tie_embeddings: the output head and the embedding are in different ",
                 "pipeline stages; tied weights across stages are not supported yet");
  const auto std = static_cast<float>(config_.init_std);
  if (layers_.embedding)
    embed_ =
        std::make_unique<Embedding>(params_, kEmbeddingLayer, config_.vocab_size, config_.dim, std);
  for (int64_t layer = layers_.first; layer < layers_.end; ++layer) {
    const size_t first = params_.entries().size();
    blocks_.push_back(std::make_unique<TransformerBlock>(params_, config_, layer));
    block_offsets_.push_back(params_.entries()[first].offset);
  }
  if (layers_.head) {
    norm_ = std::make_unique<RMSNorm>(params_, "model.norm", config_.dim, config_.norm_eps);
    lm_head_ = std::make_unique<Linear>(
        config_.tie_embeddings ? Linear::tied(params_, kHeadLayer, embed_->weight())
                               : Linear(params_, kHeadLayer, config_.dim, config_.vocab_size, std));
  }
}

ModelStage::~ModelStage() = default;

FlatRange ModelStage::block_range(size_t block) const {
  const int64_t end = block + 1 < blocks_.size() ? block_offsets_[block + 1]
                      : norm_                    ? params_.find("model.norm.weight")->offset
                                                 : params_.padded_numel();
  return {block_offsets_[block], end};
}

Tensor ModelStage::run_forward(LayerContext& ctx, const Tensor& input) {
  ResidualStream s;
  if (embed_) {
    LayerScope scope(ctx.store, kEmbeddingLayer, Phase::kForward);
    s.x = embed_->forward(ctx, input);  // (B, T, C)
  } else {
    s.x = input;  // (B, T, C)
  }
  for (auto& block : blocks_) {
    LayerScope scope(ctx.store, block->name(), Phase::kForward);
    s = block->forward(ctx, s);
  }
  if (!norm_) {
    // The next stage receives the stream summed (the add its first norm would have fused).
    if (s.pending.defined()) ops::add_(s.x, s.pending);
    return s.x;  // (B, T, C)
  }
  LayerScope scope(ctx.store, kHeadLayer, Phase::kForward);
  return lm_head_->forward(ctx, norm_->forward(ctx, s.x, s.pending_or_null()));  // (B, T, V)
}

Tensor ModelStage::forward(ActivationStore& store, int64_t micro_batch, const Tensor& input) {
  store.set_micro_batch(micro_batch);
  LayerContext ctx{params_, store, true, parallel_};
  return run_forward(ctx, input);
}

Tensor ModelStage::forward_inference(const Tensor& input) {
  NoStore no_store;
  LayerContext ctx{params_, no_store, false, parallel_};
  return run_forward(ctx, input);
}

Tensor ModelStage::backward(ActivationStore& store, int64_t micro_batch, const Tensor& dout,
                            const GradsFinalHook& grads_final) {
  store.set_micro_batch(micro_batch);
  LayerContext ctx{params_, store, true, parallel_};
  const auto final_range = [&](FlatRange range) {
    if (grads_final && range.size() > 0) grads_final(range);
  };
  // Parameters are declared embedding, blocks, final norm, head: backward finishes them from the
  // end of the flat buffer towards its start.
  Tensor dx = dout;
  if (norm_) {
    LayerScope scope(ctx.store, kHeadLayer, Phase::kBackward);
    dx = norm_->backward(ctx, lm_head_->backward(ctx, dout));
    final_range({params_.find("model.norm.weight")->offset, params_.padded_numel()});
  }
  for (size_t b = blocks_.size(); b-- > 0;) {
    LayerScope scope(ctx.store, blocks_[b]->name(), Phase::kBackward);
    dx = blocks_[b]->backward(ctx, dx);
    final_range(block_range(b));
  }
  if (!embed_) return dx;  // (B, T, C), for the previous stage
  {
    LayerScope scope(ctx.store, kEmbeddingLayer, Phase::kBackward);
    embed_->backward(ctx, dx);
  }
  final_range({0, blocks_.empty()
                      ? (norm_ ? params_.find("model.norm.weight")->offset : params_.padded_numel())
                      : block_offsets_.front()});
  return Tensor();
}

ops::CrossEntropyResult forward_loss_backward(ModelStage& stage, ActivationStore& store,
                                              int64_t micro_batch, const Tensor& tokens,
                                              const Tensor& targets, double grad_scale,
                                              const ModelStage::GradsFinalHook& grads_final) {
  const Tensor logits = stage.forward(store, micro_batch, tokens);  // (B, T, V)
  const ops::CrossEntropyResult result = loss_and_gradient(logits, targets, grad_scale);
  stage.backward(store, micro_batch, logits, grads_final);  // logits now hold dlogits
  return result;
}

ops::CrossEntropyResult loss_and_gradient(const Tensor& logits, const Tensor& targets,
                                          double grad_scale) {
  const int64_t N = targets.numel(), V = logits.size(-1);
  const TensorView rows = logits.view().reshape(Shape{N, V});
  return ops::cross_entropy(rows, targets.view().reshape(Shape{N}), rows, grad_scale);
}

}  // namespace memento
