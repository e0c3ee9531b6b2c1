#include "core/layers/rmsnorm.h"

#include "core/ops/dispatch.h"
#include "core/ops/rmsnorm.h"

namespace memento {

RMSNorm::RMSNorm(ParameterSet& params, const std::string& name, int64_t C, double eps)
    : name_(name),
      C_(C),
      eps_(eps),
      weight_(params.declare(name + ".weight", Shape{C}, ParamInit::ones(), false)) {
  MEMENTO_CHECK(C > 0, "RMSNorm ", name, ": C = ", C);
}

Tensor RMSNorm::forward(LayerContext& ctx, const Tensor& x, const Tensor* residual) {
  MEMENTO_EXPECT(x.shape().ndim() >= 1 && x.size(-1) == C_, ShapeError, "RMSNorm ", name_,
                 ": x: expected (..., ", C_, "), got ", x.shape().str());
  const TensorView weight = ctx.params.value(weight_);  // (C)
  const Device device = weight.is_meta() ? Device::meta() : x.device();
  Tensor y = Tensor::empty(x.shape(), x.dtype(), device);  // (..., C)
  Tensor rstd = Tensor::empty(Shape{x.numel() / C_}, ops::stat_dtype(x.dtype()), device);  // (rows)
  const TensorView r = residual ? residual->view() : TensorView();
  ops::rmsnorm_forward(x, weight, ops::rmsnorm_eps(x.dtype(), eps_), y, rstd,
                       residual ? &r : nullptr);
  if (ctx.training) {
    ctx.store.save(name_ + "/x", x);
    ctx.store.save(name_ + "/rstd", std::move(rstd));
  }
  return y;
}

Tensor RMSNorm::backward(LayerContext& ctx, const Tensor& dy, const Tensor* residual) {
  const Tensor x = ctx.store.take(name_ + "/x");        // (..., C)
  const Tensor rstd = ctx.store.take(name_ + "/rstd");  // (rows)
  const TensorView weight = ctx.params.value(weight_);  // (C)
  const bool meta = dy.device().is_meta() || x.device().is_meta() || weight.is_meta();
  Tensor dx = Tensor::empty(x.shape(), x.dtype(), meta ? Device::meta() : x.device());  // (..., C)
  const TensorView r = residual ? residual->view() : TensorView();
  ops::rmsnorm_backward(dy, x, weight, rstd, dx, ctx.params.grad(weight_), residual ? &r : nullptr);
  return dx;
}

}  // namespace memento
