#include "core/ops/rmsnorm.h"

#include <algorithm>
#include <cmath>

#include "core/ops/cpu_common.h"
#include "core/ops/dispatch.h"
#ifdef MEMENTO_WITH_CUDA
#include "core/cuda/rmsnorm.h"
#endif

namespace memento::ops {
namespace {

using detail::any_meta;
using detail::dispatch_float;

// Row blocks of the backward pass. Each block sums its rows' share of the weight gradient into
// its own fp64 partial; the partials are then added in block order. The blocks depend on the row
// count alone, so dweight is bit-identical for any thread count, and x and dy are read once.
constexpr int64_t kWeightBlocks = 64;

int64_t rows_of(const TensorView& x, const char* op) {
  MEMENTO_EXPECT(x.ndim() >= 1, ShapeError, op, ": x must have a channel dimension, got ",
                 x.shape().str());
  const int64_t C = x.size(-1);
  return C == 0 ? 0 : x.numel() / C;
}

template <typename T>
void forward_rows(T* x, const T* residual, const T* w, double eps, T* y, T* rstd, int64_t rows,
                  int64_t C) {
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    T* xr = x + r * C;  // (C)
    T* yr = y + r * C;  // (C)
    if (residual != nullptr) {
      const T* rr = residual + r * C;  // (C)
      for (int64_t c = 0; c < C; ++c) xr[c] += rr[c];
    }
    const double mean_sq = detail::dot_f64(xr, xr, C) / static_cast<double>(C);
    const T s = static_cast<T>(1.0 / std::sqrt(mean_sq + eps));
    rstd[r] = s;
    for (int64_t c = 0; c < C; ++c) yr[c] = xr[c] * s * w[c];
  }
}

template <typename T>
void backward_rows(const T* dy, const T* x, const T* w, const T* rstd, const T* residual, T* dx,
                   T* dw, double* partial, int64_t rows, int64_t C) {
  const detail::FixedBlocks blocks(rows, kWeightBlocks);
#pragma omp parallel for schedule(static)
  for (int64_t b = 0; b < blocks.count; ++b) {
    double* acc = partial + b * C;  // (C)
    std::fill(acc, acc + C, 0.0);
    for (int64_t r = blocks.begin(b); r < blocks.end(b); ++r) {
      const T* dyr = dy + r * C;                            // (C)
      const T* xr = x + r * C;                              // (C)
      T* dxr = dx + r * C;                                  // (C)
      const T* rr = residual ? residual + r * C : nullptr;  // (C)
      const double s = static_cast<double>(rstd[r]);
      // sum over channels of (dy * w) * x, in fp64 with a fixed order.
      constexpr int kLanes = 8;
      double lane[kLanes] = {};
      int64_t c = 0;
      for (; c + kLanes <= C; c += kLanes)
        for (int k = 0; k < kLanes; ++k)
          lane[k] += static_cast<double>(dyr[c + k] * w[c + k]) * static_cast<double>(xr[c + k]);
      double dot = 0;
      for (int k = 0; k < kLanes; ++k) dot += lane[k];
      for (; c < C; ++c) dot += static_cast<double>(dyr[c] * w[c]) * static_cast<double>(xr[c]);
      const T scale = rstd[r];
      const T correction = static_cast<T>(s * s * s * dot / static_cast<double>(C));
      for (c = 0; c < C; ++c) {
        acc[c] += static_cast<double>(dyr[c]) * static_cast<double>(xr[c]) * s;
        const T d = scale * dyr[c] * w[c] - correction * xr[c];
        dxr[c] = rr ? d + rr[c] : d;
      }
    }
  }
#pragma omp parallel for schedule(static)
  for (int64_t c = 0; c < C; ++c) {
    double sum = 0;
    for (int64_t b = 0; b < blocks.count; ++b) sum += partial[b * C + c];
    dw[c] += static_cast<T>(sum);
  }
}

}  // namespace

double rmsnorm_eps(DType dtype, double eps) {
  return dtype == DType::kF64 ? eps : static_cast<double>(static_cast<float>(eps));
}

void rmsnorm_forward(const TensorView& x, const TensorView& weight, double eps, const TensorView& y,
                     const TensorView& rstd, const TensorView* residual) {
  MEMENTO_CUDA_DISPATCH(x, cuda::rmsnorm_forward(x, weight, eps, y, rstd, residual));
  const int64_t rows = rows_of(x, "rmsnorm_forward");
  const int64_t C = x.size(-1);
  expect_shape(weight, Shape{C}, "rmsnorm_forward: weight");
  expect_shape(y, x.shape(), "rmsnorm_forward: y");
  expect_shape(rstd, Shape{rows}, "rmsnorm_forward: rstd");
  expect_dtype(weight, x.dtype(), "rmsnorm_forward: weight");
  expect_dtype(y, x.dtype(), "rmsnorm_forward: y");
  expect_dtype(rstd, x.dtype(), "rmsnorm_forward: rstd");
  if (residual) {
    expect_shape(*residual, x.shape(), "rmsnorm_forward: residual");
    expect_dtype(*residual, x.dtype(), "rmsnorm_forward: residual");
    MEMENTO_CHECK(
        residual->raw() == nullptr || (residual->raw() != x.raw() && residual->raw() != y.raw()),
        "rmsnorm_forward: residual aliases x or y");
  }
  dispatch_float(x.dtype(), "rmsnorm_forward", "x", [&](auto zero) {
    using T = decltype(zero);
    if (any_meta({x, weight, y, rstd}) || (residual && residual->is_meta())) return;
    forward_rows(x.data<T>(), residual ? residual->data<T>() : nullptr, weight.data<T>(), eps,
                 y.data<T>(), rstd.data<T>(), rows, C);
  });
}

void rmsnorm_backward(const TensorView& dy, const TensorView& x, const TensorView& weight,
                      const TensorView& rstd, const TensorView& dx, const TensorView& dweight,
                      const TensorView* residual) {
  MEMENTO_CUDA_DISPATCH(x, cuda::rmsnorm_backward(dy, x, weight, rstd, dx, dweight, residual));
  const int64_t rows = rows_of(x, "rmsnorm_backward");
  const int64_t C = x.size(-1);
  expect_shape(dy, x.shape(), "rmsnorm_backward: dy");
  expect_shape(dx, x.shape(), "rmsnorm_backward: dx");
  expect_shape(weight, Shape{C}, "rmsnorm_backward: weight");
  expect_shape(dweight, Shape{C}, "rmsnorm_backward: dweight");
  expect_shape(rstd, Shape{rows}, "rmsnorm_backward: rstd");
  expect_dtype(dy, x.dtype(), "rmsnorm_backward: dy");
  expect_dtype(weight, x.dtype(), "rmsnorm_backward: weight");
  expect_dtype(rstd, x.dtype(), "rmsnorm_backward: rstd");
  expect_dtype(dx, x.dtype(), "rmsnorm_backward: dx");
  expect_dtype(dweight, x.dtype(), "rmsnorm_backward: dweight");
  if (residual) {
    expect_shape(*residual, x.shape(), "rmsnorm_backward: residual");
    expect_dtype(*residual, x.dtype(), "rmsnorm_backward: residual");
    MEMENTO_CHECK(residual->raw() == nullptr || residual->raw() != dx.raw(),
                  "rmsnorm_backward: residual aliases dx");
  }
  dispatch_float(x.dtype(), "rmsnorm_backward", "x", [&](auto zero) {
    using T = decltype(zero);
    // Allocated before the kMeta test so that the dry run counts it too.
    const Tensor partial = Tensor::empty(Shape{std::min(rows, kWeightBlocks), C}, DType::kF64,
                                         x.device());  // (blocks, C)
    if (any_meta({dy, x, weight, rstd, dx, dweight}) || (residual && residual->is_meta())) return;
    backward_rows(dy.data<T>(), x.data<T>(), weight.data<T>(), rstd.data<T>(),
                  residual ? residual->data<T>() : nullptr, dx.data<T>(), dweight.data<T>(),
                  partial.data<double>(), rows, C);
  });
}

}  // namespace memento::ops
