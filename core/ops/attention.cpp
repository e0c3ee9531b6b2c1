#include "core/ops/attention.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <type_traits>

#include "core/ops/cpu_common.h"
#include "core/ops/dispatch.h"
#include "core/threads.h"
#ifdef MEMENTO_WITH_CUDA
#include "core/cuda/attention.h"
#endif

namespace memento::ops {
namespace {

using detail::any_meta;
using detail::dispatch_float;
using detail::Head;
using detail::head;

// Query rows per forward/dq task and keys per tile: a key tile (K and V, transposed) and the
// tile's accumulators stay in L1/L2 while every row of the task streams over it.
constexpr int64_t kQueryTile = 64;
constexpr int64_t kKeyTile = 64;
// Below this many multiply-adds a parallel region costs more than it saves.
constexpr int64_t kMinParallelWork = 1 << 16;

struct Dims : detail::HeadDims {
  bool parallel() const { return B * NH * T * (T + 1) / 2 * HS >= kMinParallelWork; }
};

Dims check_shapes(const TensorView& q, const TensorView& k, const TensorView& v,
                  const TensorView& lse, const char* op) {
  const Dims d{detail::check_qkv(q, k, v, op)};
  expect_shape(lse, Shape{d.B, d.NH, d.T}, "attention lse");
  expect_dtype(lse, q.dtype(), op);
  return d;
}

// dst[d * kKeyTile + j] = src row (j0 + j)[d] for j < w: the tile transposed so that a row times
// the tile is a sum of contiguous axpys.
template <typename T>
void load_transposed(Head<const T> src, int64_t j0, int64_t w, int64_t HS, T* dst) {
  for (int64_t j = 0; j < w; ++j) {
    const T* r = src.row(j0 + j);
    for (int64_t d = 0; d < HS; ++d) dst[d * kKeyTile + j] = r[d];
  }
}

// out[j] = sum_d a[d] * tile[d][j] for j < n, summed over d in order.
template <typename T>
void row_times_tile(const T* a, const T* tile, int64_t HS, int64_t n, T* out) {
  std::fill(out, out + n, T{0});
  for (int64_t d = 0; d < HS; ++d) {
    const T ad = a[d];
    const T* col = tile + d * kKeyTile;
#pragma omp simd
    for (int64_t j = 0; j < n; ++j) out[j] += ad * col[j];
  }
}

template <typename T>
void axpy(T a, const T* x, T* y, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) y[i] += a * x[i];
}

template <typename T>
T dot(const T* a, const T* b, int64_t n) {
  T s = 0;
#pragma omp simd reduction(+ : s)
  for (int64_t i = 0; i < n; ++i) s += a[i] * b[i];
  return s;
}

int64_t tiles(int64_t n, int64_t tile) { return (n + tile - 1) / tile; }

// Per-thread tiles of the parallel regions below, from the device's default resource (so a
// tracked step peak counts them, the dry run included): `elements` per thread.
int region_threads(const Dims& dm) { return dm.parallel() ? num_threads() : 1; }

ScratchBuffer thread_tiles(const Dims& dm, DType dtype, Device device, int64_t elements) {
  return ScratchBuffer(static_cast<size_t>(elements) * dtype_size(dtype), region_threads(dm),
                       default_resource(device));
}

// The forward tiles of one thread: kt (HS, kKeyTile), s (kKeyTile), acc (kQueryTile, HS), m and
// l (kQueryTile).
int64_t forward_tile_elements(int64_t HS) {
  return HS * kKeyTile + kKeyTile + kQueryTile * HS + 2 * kQueryTile;
}
// The backward tiles of one thread: kt, vt (HS, kKeyTile), p, ds (kKeyTile), and either acc
// (kQueryTile, HS) or dk_acc, dv_acc (kKeyTile, HS).
int64_t backward_tile_elements(int64_t HS) {
  return 2 * HS * kKeyTile + 2 * kKeyTile + std::max(kQueryTile, 2 * kKeyTile) * HS;
}

template <typename T>
void forward_kernel(const TensorView& q, const TensorView& k, const TensorView& v,
                    const TensorView& out, const TensorView& lse, Dims dm,
                    const ScratchBuffer& scratch) {
  const int64_t HS = dm.HS, Tn = dm.T;
  const T scale = static_cast<T>(1.0 / std::sqrt(static_cast<double>(HS)));
  T* lse_p = lse.data<T>();
  const int64_t query_tiles = tiles(Tn, kQueryTile);
#pragma omp parallel num_threads(region_threads(dm)) if (dm.parallel())
  {
    T* const kt = scratch.slice<T>(omp_get_thread_num());
    T* const s = kt + HS * kKeyTile;
    T* const acc = s + kKeyTile;
    T* const m = acc + kQueryTile * HS;
    T* const l = m + kQueryTile;
#pragma omp for collapse(3) schedule(dynamic, 1)
    for (int64_t b = 0; b < dm.B; ++b) {
      for (int64_t h = 0; h < dm.NH; ++h) {
        for (int64_t qt = 0; qt < query_tiles; ++qt) {
          const int64_t g = h / dm.group();
          const Head<const T> qh = head<const T>(q, b, h), kh = head<const T>(k, b, g),
                              vh = head<const T>(v, b, g);
          const int64_t i0 = qt * kQueryTile, i1 = std::min(i0 + kQueryTile, Tn);
          std::fill(acc, acc + kQueryTile * HS, T{0});
          std::fill(m, m + kQueryTile, -std::numeric_limits<T>::infinity());
          std::fill(l, l + kQueryTile, T{0});
          for (int64_t j0 = 0; j0 < i1; j0 += kKeyTile) {
            const int64_t w = std::min(kKeyTile, i1 - j0);
            load_transposed(kh, j0, w, HS, kt);
            for (int64_t i = std::max(i0, j0); i < i1; ++i) {
              const int64_t ii = i - i0, n = std::min(w, i - j0 + 1);
              row_times_tile(qh.row(i), kt, HS, n, s);
              T mx = m[ii];
              for (int64_t j = 0; j < n; ++j) {
                s[j] *= scale;
                mx = std::max(mx, s[j]);
              }
              // Online softmax: rescale what earlier tiles accumulated to the new row maximum.
              const T alpha = std::exp(m[ii] - mx);
              T sum = 0;
              for (int64_t j = 0; j < n; ++j) {
                s[j] = std::exp(s[j] - mx);
                sum += s[j];
              }
              l[ii] = l[ii] * alpha + sum;
              m[ii] = mx;
              T* o = acc + ii * HS;
              for (int64_t d = 0; d < HS; ++d) o[d] *= alpha;
              for (int64_t j = 0; j < n; ++j) axpy(s[j], vh.row(j0 + j), o, HS);
            }
          }
          const Head<T> oh = head<T>(out, b, h);
          for (int64_t i = i0; i < i1; ++i) {
            const int64_t ii = i - i0;
            const T inv = T{1} / l[ii];
            T* o = oh.row(i);
            for (int64_t d = 0; d < HS; ++d) o[d] = acc[ii * HS + d] * inv;
            lse_p[(b * dm.NH + h) * Tn + i] = m[ii] + std::log(l[ii]);
          }
        }
      }
    }
  }
}

// dS_ij = P_ij (dP_ij - D_i) for j < n of one row against a transposed key/value tile, where
// P_ij = exp(scale q_i.k_j - lse_i), dP_ij = do_i.v_j. Leaves P in p and dS in ds.
template <typename T>
void row_gradients(const T* qi, const T* doi, T lse_i, T D_i, const T* kt, const T* vt, int64_t HS,
                   int64_t n, T scale, T* p, T* ds) {
  row_times_tile(qi, kt, HS, n, p);
  row_times_tile(doi, vt, HS, n, ds);
  for (int64_t j = 0; j < n; ++j) {
    p[j] = std::exp(p[j] * scale - lse_i);
    ds[j] = p[j] * (ds[j] - D_i);
  }
}

// Pass 1: dq over (b, h, query tile), and D_i = do_i . o_i for pass 2.
template <typename T>
void backward_dq_kernel(const TensorView& q, const TensorView& k, const TensorView& v,
                        const TensorView& out, const TensorView& lse, const TensorView& dout,
                        const TensorView& dq, T* D, Dims dm, const ScratchBuffer& scratch) {
  const int64_t HS = dm.HS, Tn = dm.T;
  const T scale = static_cast<T>(1.0 / std::sqrt(static_cast<double>(HS)));
  const T* lse_p = lse.data<T>();
  const int64_t query_tiles = tiles(Tn, kQueryTile);
#pragma omp parallel num_threads(region_threads(dm)) if (dm.parallel())
  {
    T* const kt = scratch.slice<T>(omp_get_thread_num());
    T* const vt = kt + HS * kKeyTile;
    T* const p = vt + HS * kKeyTile;
    T* const ds = p + kKeyTile;
    T* const acc = ds + kKeyTile;
#pragma omp for collapse(3) schedule(dynamic, 1)
    for (int64_t b = 0; b < dm.B; ++b) {
      for (int64_t h = 0; h < dm.NH; ++h) {
        for (int64_t qt = 0; qt < query_tiles; ++qt) {
          const int64_t g = h / dm.group();
          const Head<const T> qh = head<const T>(q, b, h), kh = head<const T>(k, b, g),
                              vh = head<const T>(v, b, g), oh = head<const T>(out, b, h),
                              doh = head<const T>(dout, b, h);
          const int64_t i0 = qt * kQueryTile, i1 = std::min(i0 + kQueryTile, Tn);
          const T* lse_row = lse_p + (b * dm.NH + h) * Tn;
          T* D_row = D + (b * dm.NH + h) * Tn;
          for (int64_t i = i0; i < i1; ++i) D_row[i] = dot(doh.row(i), oh.row(i), HS);
          std::fill(acc, acc + kQueryTile * HS, T{0});
          for (int64_t j0 = 0; j0 < i1; j0 += kKeyTile) {
            const int64_t w = std::min(kKeyTile, i1 - j0);
            load_transposed(kh, j0, w, HS, kt);
            load_transposed(vh, j0, w, HS, vt);
            for (int64_t i = std::max(i0, j0); i < i1; ++i) {
              const int64_t n = std::min(w, i - j0 + 1);
              row_gradients(qh.row(i), doh.row(i), lse_row[i], D_row[i], kt, vt, HS, n, scale, p,
                            ds);
              T* a = acc + (i - i0) * HS;
              for (int64_t j = 0; j < n; ++j) axpy(ds[j], kh.row(j0 + j), a, HS);
            }
          }
          const Head<T> dqh = head<T>(dq, b, h);
          for (int64_t i = i0; i < i1; ++i)
            for (int64_t d = 0; d < HS; ++d) dqh.row(i)[d] = acc[(i - i0) * HS + d] * scale;
        }
      }
    }
  }
}

// Pass 2: dk and dv over (b, kv head, key tile); the query heads of the group and the query
// rows are visited in order, so the sums are deterministic without atomics.
template <typename T>
void backward_dkv_kernel(const TensorView& q, const TensorView& k, const TensorView& v,
                         const TensorView& lse, const TensorView& dout, const TensorView& dk,
                         const TensorView& dv, const T* D, Dims dm, const ScratchBuffer& scratch) {
  const int64_t HS = dm.HS, Tn = dm.T;
  const T scale = static_cast<T>(1.0 / std::sqrt(static_cast<double>(HS)));
  const T* lse_p = lse.data<T>();
  const int64_t key_tiles = tiles(Tn, kKeyTile);
#pragma omp parallel num_threads(region_threads(dm)) if (dm.parallel())
  {
    T* const kt = scratch.slice<T>(omp_get_thread_num());
    T* const vt = kt + HS * kKeyTile;
    T* const p = vt + HS * kKeyTile;
    T* const ds = p + kKeyTile;
    T* const dk_acc = ds + kKeyTile;
    T* const dv_acc = dk_acc + kKeyTile * HS;
#pragma omp for collapse(3) schedule(dynamic, 1)
    for (int64_t b = 0; b < dm.B; ++b) {
      for (int64_t g = 0; g < dm.NKV; ++g) {
        for (int64_t kt_index = 0; kt_index < key_tiles; ++kt_index) {
          const Head<const T> kh = head<const T>(k, b, g), vh = head<const T>(v, b, g);
          const int64_t j0 = kt_index * kKeyTile, w = std::min(kKeyTile, Tn - j0);
          load_transposed(kh, j0, w, HS, kt);
          load_transposed(vh, j0, w, HS, vt);
          std::fill(dk_acc, dk_acc + kKeyTile * HS, T{0});
          std::fill(dv_acc, dv_acc + kKeyTile * HS, T{0});
          for (int64_t h = g * dm.group(); h < (g + 1) * dm.group(); ++h) {
            const Head<const T> qh = head<const T>(q, b, h), doh = head<const T>(dout, b, h);
            const T* lse_row = lse_p + (b * dm.NH + h) * Tn;
            const T* D_row = D + (b * dm.NH + h) * Tn;
            for (int64_t i = j0; i < Tn; ++i) {
              const int64_t n = std::min(w, i - j0 + 1);
              row_gradients(qh.row(i), doh.row(i), lse_row[i], D_row[i], kt, vt, HS, n, scale, p,
                            ds);
              for (int64_t j = 0; j < n; ++j) {
                axpy(p[j], doh.row(i), dv_acc + j * HS, HS);
                axpy(ds[j], qh.row(i), dk_acc + j * HS, HS);
              }
            }
          }
          const Head<T> dkh = head<T>(dk, b, g), dvh = head<T>(dv, b, g);
          for (int64_t j = 0; j < w; ++j) {
            for (int64_t d = 0; d < HS; ++d) {
              dkh.row(j0 + j)[d] = dk_acc[j * HS + d] * scale;
              dvh.row(j0 + j)[d] = dv_acc[j * HS + d];
            }
          }
        }
      }
    }
  }
}

}  // namespace

void attention_forward(const TensorView& q, const TensorView& k, const TensorView& v,
                       const TensorView& out, const TensorView& lse) {
  MEMENTO_CUDA_DISPATCH(q, cuda::attention_forward(q, k, v, out, lse));
  const Dims dm = check_shapes(q, k, v, lse, "attention_forward");
  expect_shape(out, q.shape(), "attention_forward out");
  expect_dtype(out, q.dtype(), "attention_forward out");
  const ScratchBuffer scratch =
      thread_tiles(dm, q.dtype(), q.device(), forward_tile_elements(dm.HS));
  if (any_meta({q, k, v, out, lse})) return;
  dispatch_float(q.dtype(), "attention_forward", "q", [&](auto zero) {
    forward_kernel<decltype(zero)>(q, k, v, out, lse, dm, scratch);
  });
}

void attention_backward(const TensorView& q, const TensorView& k, const TensorView& v,
                        const TensorView& out, const TensorView& lse, const TensorView& dout,
                        const TensorView& dq, const TensorView& dk, const TensorView& dv) {
  MEMENTO_CUDA_DISPATCH(q, cuda::attention_backward(q, k, v, out, lse, dout, dq, dk, dv));
  const Dims dm = check_shapes(q, k, v, lse, "attention_backward");
  for (const TensorView* t : {&out, &dout, &dq}) {
    expect_shape(*t, q.shape(), "attention_backward out/dout/dq");
    expect_dtype(*t, q.dtype(), "attention_backward out/dout/dq");
  }
  for (const TensorView* t : {&dk, &dv}) {
    expect_shape(*t, k.shape(), "attention_backward dk/dv");
    expect_dtype(*t, q.dtype(), "attention_backward dk/dv");
  }
  // Allocated before the kMeta test so that the dry run counts them too.
  const Tensor D = Tensor::empty(lse.shape(), lse.dtype(), q.device());  // (B, NH, T): do_i . o_i
  const ScratchBuffer scratch =
      thread_tiles(dm, q.dtype(), q.device(), backward_tile_elements(dm.HS));
  if (any_meta({q, k, v, out, lse, dout, dq, dk, dv})) return;
  dispatch_float(q.dtype(), "attention_backward", "q", [&](auto zero) {
    using T = decltype(zero);
    backward_dq_kernel<T>(q, k, v, out, lse, dout, dq, D.data<T>(), dm, scratch);
    backward_dkv_kernel<T>(q, k, v, lse, dout, dk, dv, D.data<T>(), dm, scratch);
  });
}

}  // namespace memento::ops
