// Rotary position embedding (RoPE) in Hugging Face Llama's rotate-half convention: for i < HS/2
// the pair (x_i, x_{i+HS/2}) at position p turns by the angle p * theta^(-2i/HS).
// CPU tensors in fp32 or fp64; kMeta tensors are accepted (shapes checked, compute skipped).
#pragma once

#include <cstdint>

#include "core/tensor.h"

namespace memento::ops {

// cos and sin of every (position, frequency) angle, computed in fp64 and stored in `dtype`.
// Positions first_position .. first_position + T - 1 (a sequence-parallel rank passes its offset).
struct RopeTable {
  Tensor cos;  // (T, HS/2)
  Tensor sin;  // (T, HS/2)
};
RopeTable rope_table(int64_t T, int64_t HS, double theta, DType dtype,
                     Device device = Device::cpu(), int64_t first_position = 0);

// x (B, T, NH, HS), rotated in place: x_i' = x_i cos - x_{i+HS/2} sin,
// x_{i+HS/2}' = x_{i+HS/2} cos + x_i sin. HS must be even; table from rope_table(T, HS, ...).
void rope_(const TensorView& x, const RopeTable& table);

// Backward of rope_: the gradient dx (B, T, NH, HS) turned back by the inverse rotation in place.
void rope_backward_(const TensorView& dx, const RopeTable& table);

}  // namespace memento::ops
