// Helpers shared by the CPU ops: dtype dispatch, the kMeta test, fixed-order reductions.
// Internal to core/ops; not part of the op API.
#pragma once

#include <algorithm>
#include <cstdint>
#include <initializer_list>
#include <type_traits>

#include "core/tensor.h"

namespace memento::ops::detail {

// Calls f(T{}) with T = float or double for the dtype; any other dtype is a ShapeError naming
// the op and the tensor.
template <typename F>
decltype(auto) dispatch_float(DType dtype, const char* op, const char* tensor, F&& f) {
  switch (dtype) {
    case DType::kF32:
      return f(float{});
    case DType::kF64:
      return f(double{});
    default:
      break;
  }
  throw ShapeError(::memento::detail::concat(
      op, ": ", tensor, " must be f32 or f64 on the CPU, got ", dtype_name(dtype)));
}

// True when any of the tensors is on kMeta: the op checks shapes and skips its compute.
inline bool any_meta(std::initializer_list<TensorView> tensors) {
  return std::any_of(tensors.begin(), tensors.end(),
                     [](const TensorView& t) { return t.is_meta(); });
}

// Sum of a[i] * b[i] in fp64 with kLanes independent accumulators added in a fixed order: the
// compiler can vectorise it and the result does not depend on threads or alignment.
template <typename T>
double dot_f64(const T* a, const T* b, int64_t n) {
  constexpr int kLanes = 8;
  double lane[kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes)
    for (int k = 0; k < kLanes; ++k)
      lane[k] += static_cast<double>(a[i + k]) * static_cast<double>(b[i + k]);
  double tail = 0;
  for (; i < n; ++i) tail += static_cast<double>(a[i]) * static_cast<double>(b[i]);
  double s = 0;
  for (int k = 0; k < kLanes; ++k) s += lane[k];
  return s + tail;
}

// Splits n items into at most max_blocks contiguous blocks whose boundaries depend only on n, so
// per-block partial sums combined in block order are the same for any thread count.
struct FixedBlocks {
  static constexpr int64_t kMaxBlocks = 256;
  int64_t n, count;
  explicit FixedBlocks(int64_t items, int64_t max_blocks = kMaxBlocks)
      : n(items), count(std::min(items, max_blocks)) {}
  int64_t begin(int64_t block) const { return block * n / count; }
  int64_t end(int64_t block) const { return (block + 1) * n / count; }
};

// One head of a (B, T, H, HS) tensor: row t starts at base + t * stride.
template <typename T>
struct Head {
  T* base;
  int64_t stride;
  T* row(int64_t t) const { return base + t * stride; }
};

template <typename T>
Head<T> head(const TensorView& x, int64_t b, int64_t h) {
  const int64_t Tn = x.size(1), H = x.size(2), HS = x.size(3);
  return {x.data<std::remove_const_t<T>>() + (b * Tn * H + h) * HS, H * HS};
}

// Head layout shared by the attention ops: q (B, T, NH, HS), k and v (B, T, NKV, HS).
struct HeadDims {
  int64_t B, T, NH, NKV, HS;
  int64_t group() const { return NH / NKV; }  // query heads per key/value head
};

// Checks q, k, v against that layout (same dtype, NH a multiple of NKV); names `op` on error.
inline HeadDims check_qkv(const TensorView& q, const TensorView& k, const TensorView& v,
                          const char* op) {
  MEMENTO_EXPECT(q.ndim() == 4, ShapeError, op, ": q must be (B, T, NH, HS), got ",
                 q.shape().str());
  MEMENTO_EXPECT(k.ndim() == 4, ShapeError, op, ": k must be (B, T, NKV, HS), got ",
                 k.shape().str());
  const HeadDims d{q.size(0), q.size(1), q.size(2), k.size(2), q.size(3)};
  MEMENTO_EXPECT(d.NKV > 0 && d.NH % d.NKV == 0, ShapeError, op, ": query heads ", d.NH,
                 " must be a multiple of kv heads ", d.NKV);
  MEMENTO_EXPECT(k.shape() == (Shape{d.B, d.T, d.NKV, d.HS}), ShapeError, op,
                 ": expected k of shape ", Shape{d.B, d.T, d.NKV, d.HS}.str(), ", got ",
                 k.shape().str());
  MEMENTO_EXPECT(v.shape() == (Shape{d.B, d.T, d.NKV, d.HS}), ShapeError, op,
                 ": expected v of shape ", Shape{d.B, d.T, d.NKV, d.HS}.str(), ", got ",
                 v.shape().str());
  for (const TensorView* t : {&k, &v}) expect_dtype(*t, q.dtype(), op);
  return d;
}

}  // namespace memento::ops::detail
