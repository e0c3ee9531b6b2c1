#pragma once

#include <string>

#include "core/layers/linear.h"

namespace memento {

// Llama's MLP: down_proj(silu(gate_proj(x)) * up_proj(x)).
// Parameters "<name>.gate_proj.weight" (F, C) and "<name>.up_proj.weight" (F, C), declared back
// to back and used as one stacked (2F, C) weight, then "<name>.down_proj.weight" (C, F), which
// uses out_init_std (scaled for depth).
// forward: x (B, T, C) -> (B, T, C). Saves x ("<name>/x") and the gate and up pre-activations as
// one (B, T, 2F) tensor "<name>/gate_up". backward: dy (B, T, C) -> dx (B, T, C).
class SwiGLUMLP {
 public:
  SwiGLUMLP(ParameterSet& params, const std::string& name, int64_t C, int64_t F, float init_std,
            float out_init_std);
  Tensor forward(LayerContext& ctx, const Tensor& x);
  Tensor backward(LayerContext& ctx, const Tensor& dy);

 private:
  std::string name_;
  int64_t F_;
  Linear gate_up_;  // (2F, C): gate_proj's rows, then up_proj's
  Linear down_proj_;
};

}  // namespace memento
