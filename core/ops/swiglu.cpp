#include "core/ops/swiglu.h"

#include <cmath>

#include "core/ops/cpu_common.h"
#include "core/ops/dispatch.h"
#ifdef MEMENTO_WITH_CUDA
#include "core/cuda/swiglu.h"
#endif

namespace memento::ops {
namespace {

using detail::any_meta;
using detail::dispatch_float;

template <typename T>
T sigmoid(T x) {
  return T{1} / (T{1} + std::exp(-x));
}

}  // namespace

void swiglu_forward(const TensorView& g, const TensorView& u, const TensorView& h) {
  MEMENTO_CUDA_DISPATCH(g, cuda::swiglu_forward(g, u, h));
  expect_shape(u, g.shape(), "swiglu_forward: u");
  expect_shape(h, g.shape(), "swiglu_forward: h");
  expect_dtype(u, g.dtype(), "swiglu_forward: u");
  expect_dtype(h, g.dtype(), "swiglu_forward: h");
  dispatch_float(g.dtype(), "swiglu_forward", "g", [&](auto zero) {
    using T = decltype(zero);
    if (any_meta({g, u, h})) return;
    const T* gp = g.data<T>();
    const T* up = u.data<T>();
    T* hp = h.data<T>();
    const int64_t n = g.numel();
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; ++i) hp[i] = gp[i] * sigmoid(gp[i]) * up[i];
  });
}

void swiglu_backward(const TensorView& dh, const TensorView& g, const TensorView& u,
                     const TensorView& dg, const TensorView& du, const TensorView* h) {
  MEMENTO_CUDA_DISPATCH(g, cuda::swiglu_backward(dh, g, u, dg, du, h));
  expect_shape(u, g.shape(), "swiglu_backward: u");
  expect_shape(dh, g.shape(), "swiglu_backward: dh");
  expect_shape(dg, g.shape(), "swiglu_backward: dg");
  expect_shape(du, g.shape(), "swiglu_backward: du");
  expect_dtype(u, g.dtype(), "swiglu_backward: u");
  expect_dtype(dh, g.dtype(), "swiglu_backward: dh");
  expect_dtype(dg, g.dtype(), "swiglu_backward: dg");
  expect_dtype(du, g.dtype(), "swiglu_backward: du");
  if (h) {
    expect_shape(*h, g.shape(), "swiglu_backward: h");
    expect_dtype(*h, g.dtype(), "swiglu_backward: h");
  }
  dispatch_float(g.dtype(), "swiglu_backward", "g", [&](auto zero) {
    using T = decltype(zero);
    if (any_meta({dh, g, u, dg, du}) || (h && h->is_meta())) return;
    const T* dhp = dh.data<T>();
    const T* gp = g.data<T>();
    const T* up = u.data<T>();
    T* dgp = dg.data<T>();
    T* dup = du.data<T>();
    T* hp = h ? h->data<T>() : nullptr;
    const int64_t n = g.numel();
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; ++i) {
      const T gi = gp[i], ui = up[i], dhi = dhp[i];
      const T s = sigmoid(gi);
      // silu'(g) = s + g s (1 - s) = s (1 + g (1 - s)).
      dgp[i] = dhi * ui * s * (T{1} + gi * (T{1} - s));
      dup[i] = dhi * gi * s;
      if (hp) hp[i] = gi * s * ui;
    }
  });
}

}  // namespace memento::ops
