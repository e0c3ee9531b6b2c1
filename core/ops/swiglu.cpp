#include "core/ops/swiglu.h"

#include <cmath>
#include <string>

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

// The loops of both forms: element (r, f) of g, u, dg and du at r * ld + f, of h and dh at
// r * F + f (one row of n for the two-tensor ops, ld = 2F for the stacked ones).
template <typename T>
void forward_rows(const T* g, const T* u, T* h, int64_t rows, int64_t F, int64_t ld) {
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t f = 0; f < F; ++f) {
      const T gi = g[r * ld + f];
      h[r * F + f] = gi * sigmoid(gi) * u[r * ld + f];
    }
}

template <typename T>
void backward_rows(const T* dh, const T* g, const T* u, T* dg, T* du, T* h, int64_t rows, int64_t F,
                   int64_t ld) {
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t f = 0; f < F; ++f) {
      const int64_t i = r * ld + f, o = r * F + f;
      const T gi = g[i], ui = u[i], dhi = dh[o];
      const T s = sigmoid(gi);
      // silu'(g) = s + g s (1 - s) = s (1 + g (1 - s)).
      dg[i] = dhi * ui * s * (T{1} + gi * (T{1} - s));
      du[i] = dhi * gi * s;
      if (h) h[o] = gi * s * ui;
    }
}

// The rows and F of the stacked ops: gu (..., 2F) and `half` (..., F) of the same leading shape.
struct StackedRows {
  int64_t rows, F;
};
StackedRows stacked_rows(const TensorView& gu, const TensorView& half, const char* what) {
  MEMENTO_EXPECT(gu.ndim() >= 1 && gu.size(-1) % 2 == 0, ShapeError, what,
                 ": gu: expected (..., 2F), got ", gu.shape().str());
  const int64_t F = gu.size(-1) / 2;
  const std::string name = ::memento::detail::concat(what, ": (..., F) operand");
  expect_shape(half, gu.shape().with_dim(-1, F), name.c_str());
  expect_dtype(half, gu.dtype(), name.c_str());
  return {F == 0 ? 0 : gu.numel() / (2 * F), F};
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
    const int64_t n = g.numel();
    forward_rows(g.data<T>(), u.data<T>(), h.data<T>(), 1, n, n);
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
    const int64_t n = g.numel();
    backward_rows(dh.data<T>(), g.data<T>(), u.data<T>(), dg.data<T>(), du.data<T>(),
                  h ? h->data<T>() : nullptr, 1, n, n);
  });
}

void swiglu_stacked_forward(const TensorView& gu, const TensorView& h) {
  MEMENTO_CUDA_DISPATCH(gu, cuda::swiglu_stacked_forward(gu, h));
  const StackedRows a = stacked_rows(gu, h, "swiglu_stacked_forward");
  dispatch_float(gu.dtype(), "swiglu_stacked_forward", "gu", [&](auto zero) {
    using T = decltype(zero);
    if (any_meta({gu, h})) return;
    const T* g = gu.data<T>();
    forward_rows(g, g + a.F, h.data<T>(), a.rows, a.F, 2 * a.F);
  });
}

void swiglu_stacked_backward(const TensorView& dh, const TensorView& gu, const TensorView& dgu,
                             const TensorView* h) {
  MEMENTO_CUDA_DISPATCH(gu, cuda::swiglu_stacked_backward(dh, gu, dgu, h));
  const StackedRows a = stacked_rows(gu, dh, "swiglu_stacked_backward");
  expect_shape(dgu, gu.shape(), "swiglu_stacked_backward: dgu");
  expect_dtype(dgu, gu.dtype(), "swiglu_stacked_backward: dgu");
  if (h) stacked_rows(gu, *h, "swiglu_stacked_backward: h");
  dispatch_float(gu.dtype(), "swiglu_stacked_backward", "gu", [&](auto zero) {
    using T = decltype(zero);
    if (any_meta({dh, gu, dgu}) || (h && h->is_meta())) return;
    const T* g = gu.data<T>();
    T* dg = dgu.data<T>();
    backward_rows(dh.data<T>(), g, g + a.F, dg, dg + a.F, h ? h->data<T>() : nullptr, a.rows, a.F,
                  2 * a.F);
  });
}

}  // namespace memento::ops
