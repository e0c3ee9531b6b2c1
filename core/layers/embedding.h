#pragma once

#include <string>

#include "core/layers/layer.h"

namespace memento {

// Token embedding. Parameter "<name>.weight" (V, C), normal(init_std).
// forward: tokens (B, T) i32 -> (B, T, C). Saves tokens.
// backward: dout (B, T, C) -> nothing (scatter-adds into the weight gradient).
// Token ids outside [0, V) throw DataError naming the id and its position.
class Embedding {
 public:
  Embedding(ParameterSet& params, const std::string& name, int64_t V, int64_t C, float init_std);
  Tensor forward(LayerContext& ctx, const Tensor& tokens);
  void backward(LayerContext& ctx, const Tensor& dout);
  ParamRef weight() const { return weight_; }

 private:
  std::string name_;
  int64_t V_, C_;
  ParamRef weight_;  // (V, C)
};

}  // namespace memento
