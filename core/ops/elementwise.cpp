#include "core/ops/elementwise.h"

#include <array>

#include "core/ops/cpu_common.h"
#include "core/ops/dispatch.h"
#ifdef MEMENTO_WITH_CUDA
#include "core/cuda/elementwise.h"
#endif

namespace memento::ops {

using detail::any_meta;
using detail::dispatch_float;

void add_(const TensorView& acc, const TensorView& x) {
  MEMENTO_CUDA_DISPATCH(acc, cuda::add_(acc, x));
  expect_shape(x, acc.shape(), "add_: x");
  expect_dtype(x, acc.dtype(), "add_: x");
  if (any_meta({acc, x})) return;
  dispatch_float(acc.dtype(), "add_", "acc", [&](auto zero) {
    using T = decltype(zero);
    T* a = acc.data<T>();
    const T* b = x.data<T>();
    const int64_t n = acc.numel();
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; ++i) a[i] += b[i];
  });
}

void scale_(const TensorView& x, double alpha) {
  MEMENTO_CUDA_DISPATCH(x, cuda::scale_(x, alpha));
  if (x.is_meta()) return;
  dispatch_float(x.dtype(), "scale_", "x", [&](auto zero) {
    using T = decltype(zero);
    T* p = x.data<T>();
    const T s = static_cast<T>(alpha);
    const int64_t n = x.numel();
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; ++i) p[i] *= s;
  });
}

double sum_of_squares(const TensorView& x) {
  MEMENTO_CUDA_DISPATCH_OR(x, cuda::sum_of_squares(x), 0.0);
  return dispatch_float(x.dtype(), "sum_of_squares", "x", [&](auto zero) -> double {
    using T = decltype(zero);
    if (x.is_meta()) return 0.0;
    const T* p = x.data<T>();
    // Per-block partials over blocks fixed by n alone, summed in block order: the result is
    // bit-identical for any number of threads.
    const detail::FixedBlocks blocks(x.numel());
    std::array<double, detail::FixedBlocks::kMaxBlocks> partial{};
#pragma omp parallel for schedule(static)
    for (int64_t b = 0; b < blocks.count; ++b) {
      const int64_t begin = blocks.begin(b);
      partial[b] = detail::dot_f64(p + begin, p + begin, blocks.end(b) - begin);
    }
    double s = 0;
    for (int64_t b = 0; b < blocks.count; ++b) s += partial[b];
    return s;
  });
}

}  // namespace memento::ops
