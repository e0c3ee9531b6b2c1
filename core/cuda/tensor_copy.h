// The GPU side of core/tensor.h's copy() and fill_zero(), called by them when a tensor is on a
// CUDA device. Synchronous with the host, like their CPU versions. Only built with
// MEMENTO_WITH_CUDA.
#pragma once

#include "core/tensor.h"

namespace memento::cuda {

// Same dtype: one cudaMemcpy (host<->device or device<->device). f32 <-> bf16 on one GPU: a
// conversion kernel. Other different dtypes: the bytes are
// staged through host memory and converted there by memento::convert.
void copy_tensor(const TensorView& src, const TensorView& dst);
void fill_zero_tensor(const TensorView& t);

}  // namespace memento::cuda
