#include "core/ops/cross_entropy.h"

#include <algorithm>
#include <array>
#include <cmath>

#include "core/ops/cpu_common.h"
#include "core/ops/dispatch.h"
#ifdef MEMENTO_WITH_CUDA
#include "core/cuda/cross_entropy.h"
#endif

namespace memento::ops {
namespace {

using detail::any_meta;
using detail::dispatch_float;
using detail::FixedBlocks;

// One row: returns -log softmax(x)[target]; when d is non-null writes
// d = (softmax(x) - onehot(target)) * grad_scale. d may alias x: x[target] and the max are read
// before the first write, and each later element is read before it is overwritten.
template <typename T>
double row_loss(const T* x, T* d, int64_t V, int32_t target, double grad_scale) {
  T max = x[0];
  for (int64_t v = 1; v < V; ++v) max = std::max(max, x[v]);
  const double target_logit = static_cast<double>(x[target]);
  double sum = 0;
  if (d) {
    for (int64_t v = 0; v < V; ++v) {
      const T e = std::exp(x[v] - max);
      d[v] = e;
      sum += static_cast<double>(e);
    }
    const T scale = static_cast<T>(grad_scale / sum);
    for (int64_t v = 0; v < V; ++v) d[v] *= scale;
    d[target] -= static_cast<T>(grad_scale);
  } else {
    for (int64_t v = 0; v < V; ++v) sum += static_cast<double>(std::exp(x[v] - max));
  }
  return std::log(sum) + static_cast<double>(max) - target_logit;
}

template <typename T>
double loss_blocks(const TensorView& logits, const int32_t* targets, const TensorView& dlogits,
                   bool with_grad, double grad_scale) {
  const T* x = logits.data<T>();                   // (N, V)
  T* d = with_grad ? dlogits.data<T>() : nullptr;  // (N, V)
  const int64_t N = logits.size(0), V = logits.size(1);
  // Per-block partial sums over blocks fixed by N alone, added in block order: the loss is
  // bit-identical for any number of threads.
  const FixedBlocks blocks(N);
  std::array<double, FixedBlocks::kMaxBlocks> partial{};
#pragma omp parallel for schedule(static)
  for (int64_t b = 0; b < blocks.count; ++b) {
    double s = 0;
    for (int64_t n = blocks.begin(b); n < blocks.end(b); ++n) {
      T* dn = d ? d + n * V : nullptr;
      if (targets[n] < 0) {
        if (dn) std::fill(dn, dn + V, T{0});
        continue;
      }
      s += row_loss(x + n * V, dn, V, targets[n], grad_scale);
    }
    partial[b] = s;
  }
  double total = 0;
  for (int64_t b = 0; b < blocks.count; ++b) total += partial[b];
  return total;
}

}  // namespace

CrossEntropyResult cross_entropy(const TensorView& logits, const TensorView& targets,
                                 const TensorView& dlogits, double grad_scale) {
  MEMENTO_CUDA_DISPATCH_OR(logits, cuda::cross_entropy(logits, targets, dlogits, grad_scale),
                           CrossEntropyResult{});
  MEMENTO_EXPECT(logits.ndim() == 2, ShapeError, "cross_entropy: logits: expected (N, V), got ",
                 logits.shape().str());
  const int64_t N = logits.size(0), V = logits.size(1);
  expect_shape(targets, Shape{N}, "cross_entropy: targets");
  expect_dtype(targets, DType::kI32, "cross_entropy: targets");
  const bool with_grad = dlogits.raw() != nullptr || dlogits.is_meta();
  if (with_grad) {
    expect_shape(dlogits, logits.shape(), "cross_entropy: dlogits");
    expect_dtype(dlogits, logits.dtype(), "cross_entropy: dlogits");
  }
  CrossEntropyResult result;
  // Targets are checked serially, before any thread starts: exceptions cannot leave OpenMP.
  if (!targets.is_meta()) {
    const int32_t* t = targets.data<int32_t>();
    for (int64_t n = 0; n < N; ++n) {
      MEMENTO_EXPECT(t[n] < V, DataError, "cross_entropy: target ", t[n], " at row ", n,
                     " is outside the vocabulary [0, ", V, ")");
      if (t[n] >= 0) ++result.count;
    }
  }
  dispatch_float(logits.dtype(), "cross_entropy", "logits", [&](auto zero) {
    using T = decltype(zero);
    if (any_meta({logits, targets}) || (with_grad && dlogits.is_meta())) return;
    if (V == 0) return;
    result.loss_sum =
        loss_blocks<T>(logits, targets.data<int32_t>(), dlogits, with_grad, grad_scale);
  });
  return result;
}

}  // namespace memento::ops
