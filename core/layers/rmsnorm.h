#pragma once

#include <string>

#include "core/layers/layer.h"

namespace memento {

// RMSNorm over the last dimension: y = x / sqrt(mean(x^2) + eps) * weight.
// Parameter "<name>.weight" (C), ones, no weight decay.
// forward: x (..., C) -> y (..., C). Saves x and rstd (rows,).
// backward: dy (..., C) -> dx (..., C); weight gradient +=. With `residual` (..., C), the gradient
// that reached the norm's input around it (a residual connection) is added into dx in the same
// pass.
class RMSNorm {
 public:
  RMSNorm(ParameterSet& params, const std::string& name, int64_t C, double eps);
  // With `residual`, x += residual first, in place (a residual add, fused): x is then the sum,
  // which is what the norm normalises and saves.
  Tensor forward(LayerContext& ctx, const Tensor& x, const Tensor* residual = nullptr);
  Tensor backward(LayerContext& ctx, const Tensor& dy, const Tensor* residual = nullptr);

 private:
  std::string name_;
  int64_t C_;
  double eps_;       // rounded to the compute dtype by ops::rmsnorm_eps
  ParamRef weight_;  // (C)
};

}  // namespace memento
