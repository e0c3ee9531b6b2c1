#pragma once

#include <string>

#include "core/layers/linear.h"

namespace memento {

// Llama's MLP: down_proj(silu(gate_proj(x)) * up_proj(x)).
// Parameters "<name>.gate_proj.weight" (F, C), "<name>.up_proj.weight" (F, C),
// "<name>.down_proj.weight" (C, F); down_proj uses out_init_std (scaled for depth).
// forward: x (B, T, C) -> (B, T, C). Saves x (via the projections), gate and up pre-activations.
// backward: dy (B, T, C) -> dx (B, T, C).
class SwiGLUMLP {
 public:
  SwiGLUMLP(ParameterSet& params, const std::string& name, int64_t C, int64_t F, float init_std,
            float out_init_std);
  Tensor forward(LayerContext& ctx, const Tensor& x);
  Tensor backward(LayerContext& ctx, const Tensor& dy);

 private:
  std::string name_;
  Linear gate_proj_, up_proj_, down_proj_;
};

}  // namespace memento
