#include "core/layers/embedding.h"

#include "core/ops/embedding.h"

namespace memento {

Embedding::Embedding(ParameterSet& params, const std::string& name, int64_t V, int64_t C,
                     float init_std)
    : name_(name),
      V_(V),
      C_(C),
      weight_(params.declare(name + ".weight", Shape{V, C}, ParamInit::normal(init_std))) {}

Tensor Embedding::forward(LayerContext& ctx, const Tensor& tokens) {
  MEMENTO_EXPECT(tokens.shape().ndim() == 2, ShapeError, "Embedding ", name_,
                 ": tokens: expected (B, T), got ", tokens.shape().str());
  const TensorView weight = ctx.params.compute(weight_);  // (V, C), compute precision
  const Device device = tokens.device().is_meta() ? Device::meta() : weight.device();
  Tensor out = Tensor::empty(Shape{tokens.size(0), tokens.size(1), C_}, weight.dtype(), device);
  ops::embedding_forward(tokens, weight, out);  // (B, T, C)
  if (ctx.training) ctx.store.save(name_ + "/tokens", tokens);
  return out;
}

void Embedding::backward(LayerContext& ctx, const Tensor& dout) {
  const Tensor tokens = ctx.store.take(name_ + "/tokens");  // (B, T)
  ops::embedding_backward(tokens, dout, ctx.params.grad(weight_));
}

}  // namespace memento
