// Elementwise ops and reductions on CPU tensors (fp32 or fp64), threaded over the cores.
// kMeta tensors are accepted and skipped, so the dry run can execute a model without bytes.
#pragma once

#include "core/tensor.h"

namespace memento::ops {

void add_(const TensorView& acc, const TensorView& x);  // acc += x (same shape and dtype)
void scale_(const TensorView& x, double alpha);         // x *= alpha
double sum_of_squares(const TensorView& x);             // sum x^2 accumulated in fp64

}  // namespace memento::ops
