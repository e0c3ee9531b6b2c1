// Where an op runs: the ops in core/ops/ take CPU, kMeta or CUDA tensors. A CUDA tensor sends the
// call to the op's GPU twin in core/cuda/ (same semantics, mixed-precision dtypes: see those
// headers); a build without CUDA refuses it with an error naming the op.
#pragma once

#include "core/error.h"
#include "core/tensor.h"
#ifdef MEMENTO_WITH_CUDA
#include "core/cuda/op_profiler.h"
#endif

namespace memento::ops {

inline bool on_cuda(const TensorView& t) { return t.device().kind == DeviceKind::kCuda; }

// The activation dtype's companion for statistics (log-sum-exp, rstd, RoPE tables): fp64 stays
// fp64 (the gradient checks), everything else keeps its statistics in fp32.
inline DType stat_dtype(DType activations) {
  return activations == DType::kF64 ? DType::kF64 : DType::kF32;
}

// A kMeta tensor in a dtype the CPU ops do not compute in (bf16 of a mixed-precision model in a
// dry run): the op has nothing to do, and its CPU dtype checks do not apply.
inline bool meta_mixed(const TensorView& t) {
  return t.is_meta() && t.dtype() != DType::kF32 && t.dtype() != DType::kF64;
}

}  // namespace memento::ops

// First line of an op taking `tensor`: a CUDA tensor returns `call` (the core/cuda/ twin, timed
// by the op profiler when it is on); a kMeta tensor of a mixed-precision model returns `skipped`
// (nothing for a void op).
#ifdef MEMENTO_WITH_CUDA
#define MEMENTO_CUDA_DISPATCH_OR(tensor, call, skipped)           \
  do {                                                            \
    if (::memento::ops::on_cuda(tensor)) {                        \
      const ::memento::cuda::OpTimer memento_op_timer_(__func__); \
      return call;                                                \
    }                                                             \
    if (::memento::ops::meta_mixed(tensor)) return skipped;       \
  } while (0)
#else
#define MEMENTO_CUDA_DISPATCH_OR(tensor, call, skipped)                                        \
  do {                                                                                         \
    MEMENTO_CHECK(!::memento::ops::on_cuda(tensor), __func__,                                  \
                  ": CUDA tensor in a build without CUDA (configure with -DMEMENTO_CUDA=ON)"); \
    if (::memento::ops::meta_mixed(tensor)) return skipped;                                    \
  } while (0)
#endif
#define MEMENTO_CUDA_DISPATCH(tensor, call) MEMENTO_CUDA_DISPATCH_OR(tensor, call, )
