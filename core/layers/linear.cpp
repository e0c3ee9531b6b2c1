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
  Tensor dx;
  backward_into(ctx, dy, dx, false);
  return dx;
}

void Linear::backward_accumulate(LayerContext& ctx, const Tensor& dy, const Tensor& dx) {
  Tensor acc = dx;
  backward_into(ctx, dy, acc, true);
}

void Linear::expect_dy(const Tensor& dy) const {
  MEMENTO_EXPECT(dy.shape().ndim() >= 1 && dy.size(-1) == out_, ShapeError, "Linear ", name_,
                 ": dy: expected (..., ", out_, "), got ", dy.shape().str());
}

Tensor Linear::backward_input(LayerContext& ctx, const Tensor& dy) {
  expect_dy(dy);
  const TensorView weight = ctx.params.compute(weight_);  // (out, in)
  const Device device = weight.is_meta() ? Device::meta() : dy.device();
  Tensor dx = Tensor::empty(dy.shape().with_dim(-1, in_), dy.dtype(), device);  // (..., in)
  ops::matmul(dy, false, weight, false, dx);  // dx = dy W; skipped when dx is kMeta
  return dx;
}

void Linear::backward_weight(LayerContext& ctx, const Tensor& dy, const Tensor& x) {
  expect_dy(dy);
  expect_shape(x, dy.shape().with_dim(-1, in_), "Linear::backward_weight: x");
  const TensorView weight = ctx.params.compute(weight_);
  // dW += dy^T x. In a dry run the gradient may have bytes while dy has none: skip it.
  if (dy.device().is_meta() || x.device().is_meta() || weight.is_meta()) return;
  ops::matmul(dy, true, x, false, ctx.params.grad(weight_), 1.0, 1.0);
}

// dx = dy W (accumulate: dx += dy W, into the given tensor; else a new one); dW += dy^T x.
void Linear::backward_into(LayerContext& ctx, const Tensor& dy, Tensor& dx, bool accumulate) {
  expect_dy(dy);
  const Tensor x = ctx.store.take(name_ + "/x");          // (..., in)
  const TensorView weight = ctx.params.compute(weight_);  // (out, in)
  const bool meta = dy.device().is_meta() || x.device().is_meta() || weight.is_meta();
  if (accumulate) {
    expect_shape(dx, x.shape(), "Linear::backward_accumulate: dx");
  } else {
    dx = Tensor::empty(x.shape(), x.dtype(), meta ? Device::meta() : dy.device());
  }
  // dx (+)= dy W; skipped when dx is kMeta.
  ops::matmul(dy, false, weight, false, dx, 1.0, accumulate ? 1.0 : 0.0);
  backward_weight(ctx, dy, x);
}

}  // namespace memento
