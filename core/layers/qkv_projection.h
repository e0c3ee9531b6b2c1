#pragma once

#include <string>

#include "core/layers/linear.h"

namespace memento {

struct AttentionDims {
  int64_t C;    // model width
  int64_t NH;   // query heads
  int64_t NKV;  // key/value heads; NH % NKV == 0 (grouped-query attention)
  int64_t HS;   // head size
};

// The query, key and value projections that both attention layers start with. Parameters
// "<name>.q_proj.weight" (NH*HS, C), "<name>.k_proj.weight" (NKV*HS, C),
// "<name>.v_proj.weight" (NKV*HS, C), declared in that order.
// Throws ShapeError unless NH is a positive multiple of NKV.
// forward: x (B, T, C) -> q (B, T, NH, HS), k and v (B, T, NKV, HS); saves x once (the three
// projections' saves share its storage). backward: dq, dk, dv of those shapes -> dx (B, T, C),
// the three input gradients summed inside the GEMMs; weight gradients +=.
class QkvProjection {
 public:
  QkvProjection(ParameterSet& params, const std::string& name, AttentionDims dims, float init_std);

  struct Qkv {
    Tensor q;  // (B, T, NH, HS)
    Tensor k;  // (B, T, NKV, HS)
    Tensor v;  // (B, T, NKV, HS)
  };
  Qkv forward(LayerContext& ctx, const Tensor& x);
  Tensor backward(LayerContext& ctx, const Tensor& dq, const Tensor& dk, const Tensor& dv);

 private:
  std::string name_;
  AttentionDims dims_;
  Linear q_proj_, k_proj_, v_proj_;
};

}  // namespace memento
