#pragma once

#include <string>

#include "core/layers/layer.h"

namespace memento {

// y = x W^T, W stored as Hugging Face does: "<name>.weight" (out, in), normal(init_std); no bias.
// forward: x (..., in) -> y (..., out). Saves x (shared storage is counted once by the store).
// backward: dy (..., out) -> dx (..., in); dW += dy^T x. GEMMs go through ops::matmul (BLAS).
class Linear {
 public:
  Linear(ParameterSet& params, const std::string& name, int64_t in, int64_t out, float init_std);
  Tensor forward(LayerContext& ctx, const Tensor& x);
  Tensor backward(LayerContext& ctx, const Tensor& dy);
  ParamRef weight() const { return weight_; }

 private:
  std::string name_;
  int64_t in_, out_;
  ParamRef weight_;  // (out, in)
};

}  // namespace memento
