#include "core/layers/linear.h"

#include "core/ops/matmul.h"

namespace memento {

Linear::Linear(std::string name, int64_t in, int64_t out, ParamRef weight, GemmPrecision precision)
    : name_(std::move(name)), in_(in), out_(out), weight_(weight), precision_(precision) {}

Linear::Linear(ParameterSet& params, const std::string& name, int64_t in, int64_t out,
               float init_std, GemmPrecision precision)
    : Linear(name, in, out,
             params.declare(name + ".weight", Shape{out, in}, ParamInit::normal(init_std)),
             precision) {}

Linear Linear::stacked(ParameterSet& params, const std::string& name,
                       const std::vector<LinearPart>& parts, int64_t in, float init_std,
                       GemmPrecision precision) {
  MEMENTO_CHECK(!parts.empty(), "Linear::stacked ", name, ": no parts");
  std::vector<ParameterSet::StackedPart> declared;
  int64_t out = 0;
  for (const LinearPart& p : parts) {
    declared.push_back({p.name + ".weight", Shape{p.out, in}});
    out += p.out;
  }
  const std::vector<ParamRef> refs = params.declare_stacked(declared, ParamInit::normal(init_std));
  return Linear(name, in, out, refs.front(), precision);
}

Linear Linear::tied(const ParameterSet& params, const std::string& name, ParamRef weight,
                    GemmPrecision precision) {
  const Shape& shape = params.entries().at(weight.index).shape;
  MEMENTO_CHECK(shape.ndim() == 2, "Linear::tied ", name, ": weight ",
                params.entries().at(weight.index).name, " is ", shape.str(), ", not (out, in)");
  return Linear(name, shape[1], shape[0], weight, precision);
}

TensorView Linear::weight_view(const ParameterSet& params) const {
  const Shape shape{out_, in_};
  if (precision_ == GemmPrecision::kFp32) {
    const TensorView w = params.value_span(weight_, shape);
    MEMENTO_EXPECT(w.dtype() == DType::kF32 || w.is_meta(), ShapeError, "Linear ", name_,
                   ": fp32 GEMMs need fp32 master weights, got ", dtype_name(w.dtype()));
    return w;
  }
  return params.compute_span(weight_, shape);
}

TensorView Linear::grad_view(const ParameterSet& params) const {
  return params.grad_span(weight_, Shape{out_, in_});
}

Tensor Linear::forward_unsaved(LayerContext& ctx, const Tensor& x) {
  MEMENTO_EXPECT(x.shape().ndim() >= 1 && x.size(-1) == in_, ShapeError, "Linear ", name_,
                 ": x: expected (..., ", in_, "), got ", x.shape().str());
  const TensorView weight = weight_view(ctx.params);  // (out, in)
  const Device device = weight.is_meta() ? Device::meta() : x.device();
  Tensor y = Tensor::empty(x.shape().with_dim(-1, out_), x.dtype(), device);  // (..., out)
  ops::matmul(x, false, weight, true, y);  // y = x W^T; skipped when y is kMeta
  return y;
}

Tensor Linear::forward(LayerContext& ctx, const Tensor& x) {
  Tensor y = forward_unsaved(ctx, x);
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
  const TensorView weight = weight_view(ctx.params);  // (out, in)
  const Device device = weight.is_meta() ? Device::meta() : dy.device();
  Tensor dx = Tensor::empty(dy.shape().with_dim(-1, in_), dy.dtype(), device);  // (..., in)
  ops::matmul(dy, false, weight, false, dx);  // dx = dy W; skipped when dx is kMeta
  return dx;
}

void Linear::backward_weight(LayerContext& ctx, const Tensor& dy, const Tensor& x) {
  expect_dy(dy);
  expect_shape(x, dy.shape().with_dim(-1, in_), "Linear::backward_weight: x");
  const TensorView weight = weight_view(ctx.params);
  // dW += dy^T x. In a dry run the gradient may have bytes while dy has none: skip it.
  if (dy.device().is_meta() || x.device().is_meta() || weight.is_meta()) return;
  ops::matmul(dy, true, x, false, grad_view(ctx.params), 1.0, 1.0);
}

// dx = dy W (accumulate: dx += dy W, into the given tensor; else a new one); dW += dy^T x.
void Linear::backward_into(LayerContext& ctx, const Tensor& dy, Tensor& dx, bool accumulate) {
  expect_dy(dy);
  const Tensor x = ctx.store.take(name_ + "/x");      // (..., in)
  const TensorView weight = weight_view(ctx.params);  // (out, in)
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
