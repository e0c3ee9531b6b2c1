#pragma once

#include <string>

#include "core/layers/linear.h"

namespace memento {

// Llama's MLP: down_proj(silu(gate_proj(x)) * up_proj(x)).
// Parameters "<name>.gate_proj.weight" (F, C), "<name>.up_proj.weight" (F, C),
// "<name>.down_proj.weight" (C, F); down_proj uses out_init_std (scaled for depth).
// forward: x (B, T, C) -> (B, T, C). Saves x and the gate and up pre-activations: as one stacked
// (B, T, 2F) tensor "<name>/gate_up" when the two weights are adjacent in the flat buffers (one
// GEMM computes both), else "<name>/gate" and "<name>/up" (x then saved by the projections).
// backward: dy (B, T, C) -> dx (B, T, C).
class SwiGLUMLP {
 public:
  SwiGLUMLP(ParameterSet& params, const std::string& name, int64_t C, int64_t F, float init_std,
            float out_init_std);
  Tensor forward(LayerContext& ctx, const Tensor& x);
  Tensor backward(LayerContext& ctx, const Tensor& dy);
  bool stacked() const { return stacked_; }

 private:
  Tensor forward_stacked(LayerContext& ctx, const Tensor& x);
  Tensor backward_stacked(LayerContext& ctx, const Tensor& dy);

  std::string name_;
  int64_t C_, F_;
  Linear gate_proj_, up_proj_, down_proj_;
  bool stacked_;  // gate_proj's and up_proj's weights adjacent: one (2F, C) weight
};

}  // namespace memento
