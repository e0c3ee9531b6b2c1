#pragma once

#include <string>

#include "core/layers/layer.h"

namespace memento {

// y = x W^T, W stored as Hugging Face does: "<name>.weight" (out, in), normal(init_std); no bias.
// forward: x (..., in) -> y (..., out). Saves x (shared storage is counted once by the store).
// backward: dy (..., out) -> dx (..., in); dW += dy^T x. GEMMs go through ops::matmul (BLAS on
// the CPU, cuBLASLt on a GPU). backward_accumulate adds dx into an existing tensor inside the GEMM
// (beta = 1), for layers whose input feeds several projections (q, k and v; gate and up).
// backward_input and backward_weight are the two halves of backward for a layer that did not let
// the Linear save x (forward with ctx.training false) and hands it over only when dW is due.
class Linear {
 public:
  Linear(ParameterSet& params, const std::string& name, int64_t in, int64_t out, float init_std);
  Tensor forward(LayerContext& ctx, const Tensor& x);
  Tensor backward(LayerContext& ctx, const Tensor& dy);
  void backward_accumulate(LayerContext& ctx, const Tensor& dy, const Tensor& dx);
  Tensor backward_input(LayerContext& ctx, const Tensor& dy);                  // dx = dy W
  void backward_weight(LayerContext& ctx, const Tensor& dy, const Tensor& x);  // dW += dy^T x
  ParamRef weight() const { return weight_; }

 private:
  void backward_into(LayerContext& ctx, const Tensor& dy, Tensor& dx, bool accumulate);
  void expect_dy(const Tensor& dy) const;
  std::string name_;
  int64_t in_, out_;
  ParamRef weight_;  // (out, in)
};

}  // namespace memento
