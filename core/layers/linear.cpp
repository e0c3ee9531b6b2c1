#include "core/layers/linear.h"

#include "core/ops/matmul.h"

namespace memento {

Linear::Linear(ParameterSet& params, const std::string& name, int64_t in, int64_t out,
               float init_std)
    : name_(name),
      in_(in),
      out_(out),
      weight_(params.declare(name + ".weight", Shape{out, in}, ParamInit::normal(init_std))) {}

Tensor Linear::forward(LayerContext& ctx, const Tensor& x) {
  MEMENTO_EXPECT(x.shape().ndim() >= 1 && x.size(-1) == in_, ShapeError, "Linear ", name_,
                 ": x: expected (..., ", in_, "), got ", x.shape().str());
  const TensorView weight = ctx.params.compute(weight_);  // (out, in)
  const Device device = weight.is_meta() ? Device::meta() : x.device();
  Tensor y = Tensor::empty(x.shape().with_dim(-1, out_), x.dtype(), device);  // (..., out)
  ops::matmul(x, false, weight, true, y);  // y = x W^T; skipped when y is kMeta
  if (ctx.training) ctx.store.save(name_ + "/x", x);
  return y;
}

Tensor Linear::backward(LayerContext& ctx, const Tensor& dy) {
  MEMENTO_EXPECT(dy.shape().ndim() >= 1 && dy.size(-1) == out_, ShapeError, "Linear ", name_,
                 ": dy: expected (..., ", out_, "), got ", dy.shape().str());
  const Tensor x = ctx.store.take(name_ + "/x");        // (..., in)
  const TensorView weight = ctx.params.compute(weight_);  // (out, in)
  const TensorView dweight = ctx.params.grad(weight_);  // (out, in)
  const bool meta = dy.device().is_meta() || x.device().is_meta() || weight.is_meta();
  Tensor dx = Tensor::empty(x.shape(), x.dtype(), meta ? Device::meta() : dy.device());
  ops::matmul(dy, false, weight, false, dx);  // dx = dy W; skipped when dx is kMeta
  // dW += dy^T x. In a dry run the gradient may have bytes while dy has none: skip it.
  if (!meta) ops::matmul(dy, true, x, false, dweight, 1.0, 1.0);
  return dx;
}

}  // namespace memento
