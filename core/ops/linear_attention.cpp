#include "core/ops/linear_attention.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <type_traits>

#include "core/ops/cpu_common.h"
#include "core/ops/dispatch.h"
#include "core/threads.h"
#ifdef MEMENTO_WITH_CUDA
#include "core/cuda/linear_attention.h"
#endif

namespace memento::ops {
namespace {

using detail::any_meta;
using detail::dispatch_float;
using detail::Head;
using detail::head;

// Below this many multiply-adds a parallel region costs more than it saves.
constexpr int64_t kMinParallelWork = 1 << 16;

struct Dims : detail::HeadDims {
  bool parallel(int64_t chunk) const { return B * NH * T * HS * (chunk + HS) >= kMinParallelWork; }
};

bool given(const TensorView& t) { return t.ndim() != 0; }

Dims check_inputs(const TensorView& q, const TensorView& k, const TensorView& v,
                  std::span<const double> decay, int64_t chunk, const char* op) {
  const Dims d{detail::check_qkv(q, k, v, op)};
  MEMENTO_EXPECT(chunk > 0, ShapeError, op, ": chunk must be positive, got ", chunk);
  MEMENTO_EXPECT(decay.empty() || static_cast<int64_t>(decay.size()) == d.NH, ShapeError, op,
                 ": expected ", d.NH, " decay values (one per query head), got ", decay.size());
  for (const double lambda : decay)
    MEMENTO_EXPECT(lambda > 0 && lambda <= 1, ShapeError, op, ": decay must lie in (0, 1], got ",
                   lambda);
  return d;
}

void check_state(const TensorView& s, const Dims& d, DType activations, const char* what) {
  if (!given(s)) return;
  expect_shape(s, Shape{d.B, d.NH, d.HS, d.HS}, what);
  expect_dtype(s, linear_attention_state_dtype(activations), what);
}

const double* state_at(const TensorView& s, const Dims& d, int64_t b, int64_t h) {
  return given(s) ? s.data<double>() + (b * d.NH + h) * d.HS * d.HS : nullptr;
}
double* state_at_mut(const TensorView& s, const Dims& d, int64_t b, int64_t h) {
  return given(s) ? s.data<double>() + (b * d.NH + h) * d.HS * d.HS : nullptr;
}

template <typename T>
void axpy(T a, const T* x, T* y, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) y[i] += a * x[i];
}

// Per-thread buffers for one head's pass, carved from a slice of a ScratchBuffer (so they are
// tracked and in the dry run's step peak); nothing here outlives the op.
template <typename T>
struct Workspace {
  int64_t HS, chunk;
  double* state;  // (HS, HS): the running state, accumulated in fp64
  double* pw64;   // (chunk + 1)
  T* tile_a;      // (HS, chunk): chunk rows of an input, transposed
  T* tile_b;      // (HS, chunk)
  T* s_a;         // (chunk)
  T* s_b;         // (chunk)
  T* st;          // (HS, HS): the running state in T
  T* st_t;        // (HS, HS): and transposed
  T* increment;   // (HS, HS): one chunk's contribution to the state
  T* pw;          // (chunk + 1): lambda^n

  // Bytes of one thread's buffers: the fp64 ones first, so every buffer is aligned.
  static size_t bytes(int64_t hs, int64_t c) {
    return sizeof(double) * static_cast<size_t>(hs * hs + c + 1) +
           sizeof(T) * static_cast<size_t>(2 * hs * c + 2 * c + 3 * hs * hs + c + 1);
  }
  Workspace(int64_t hs, int64_t c, void* slice) : HS(hs), chunk(c) {
    state = static_cast<double*>(slice);
    pw64 = state + hs * hs;
    tile_a = reinterpret_cast<T*>(pw64 + c + 1);
    tile_b = tile_a + hs * c;
    s_a = tile_b + hs * c;
    s_b = s_a + c;
    st = s_b + c;
    st_t = st + hs * hs;
    increment = st_t + hs * hs;
    pw = increment + hs * hs;
  }

  void set_decay(double lambda) {
    for (int64_t n = 0; n <= chunk; ++n) {
      pw64[n] = std::pow(lambda, static_cast<double>(n));
      pw[n] = static_cast<T>(pw64[n]);
    }
  }
  // dst[d * chunk + j] = src row (t0 + j)[d] for j < L.
  void load_transposed(Head<const T> src, int64_t t0, int64_t L, T* dst) const {
    for (int64_t j = 0; j < L; ++j) {
      const T* r = src.row(t0 + j);
      for (int64_t d = 0; d < HS; ++d) dst[d * chunk + j] = r[d];
    }
  }
  // out[j] = sum_d a[d] * tile[d][j] for j in [lo, hi), summed over d in order.
  void row_times_tile(const T* a, const T* tile, int64_t lo, int64_t hi, T* out) const {
    std::fill(out + lo, out + hi, T{0});
    for (int64_t d = 0; d < HS; ++d) {
      const T ad = a[d];
      const T* col = tile + d * chunk;
      T* o = out;
#pragma omp simd
      for (int64_t j = lo; j < hi; ++j) o[j] += ad * col[j];
    }
  }
  void state_to_t() {
    for (int64_t i = 0; i < HS * HS; ++i) st[i] = static_cast<T>(state[i]);
  }
  // state = lambda^L state + increment, in fp64.
  void advance_state(int64_t L) {
    for (int64_t i = 0; i < HS * HS; ++i)
      state[i] = pw64[L] * state[i] + static_cast<double>(increment[i]);
  }
};

// o_t = sum_{j<=t} lambda^(t-j) (q_t . k_j) v_j + lambda^(t+1) q_t S0 for one head, chunk by chunk.
// S0 (HS x HS) may be null (zero) or read transposed; s_final, when not null, gets S_{T-1}.
template <typename T>
void forward_head(Head<const T> q, Head<const T> k, Head<const T> v, Head<T> o, int64_t Tn,
                  const double* s0, bool s0_transposed, double* s_final, Workspace<T>& ws) {
  const int64_t HS = ws.HS, chunk = ws.chunk;
  for (int64_t d = 0; d < HS; ++d)
    for (int64_t e = 0; e < HS; ++e)
      ws.state[d * HS + e] = !s0 ? 0.0 : s0_transposed ? s0[e * HS + d] : s0[d * HS + e];
  for (int64_t t0 = 0; t0 < Tn; t0 += chunk) {
    const int64_t L = std::min(chunk, Tn - t0);
    ws.state_to_t();
    ws.load_transposed(k, t0, L, ws.tile_a);
    for (int64_t i = 0; i < L; ++i) {
      const T* qt = q.row(t0 + i);
      T* ot = o.row(t0 + i);
      // Intra-chunk: the masked quadratic part (scores of keys j <= i).
      ws.row_times_tile(qt, ws.tile_a, 0, i + 1, ws.s_a);
      std::fill(ot, ot + HS, T{0});
      for (int64_t j = 0; j <= i; ++j) axpy(ws.pw[i - j] * ws.s_a[j], v.row(t0 + j), ot, HS);
      // Inter-chunk: q_t times the state before the chunk, decayed to position i.
      const T w = ws.pw[i + 1];
      for (int64_t d = 0; d < HS; ++d) axpy(w * qt[d], ws.st + d * HS, ot, HS);
    }
    if (t0 + L < Tn || s_final) {
      std::fill(ws.increment, ws.increment + HS * HS, T{0});
      for (int64_t i = 0; i < L; ++i) {
        const T* kt = k.row(t0 + i);
        const T* vt = v.row(t0 + i);
        const T w = ws.pw[L - 1 - i];
        for (int64_t d = 0; d < HS; ++d) axpy(w * kt[d], vt, ws.increment + d * HS, HS);
      }
      ws.advance_state(L);
    }
  }
  if (s_final) std::copy(ws.state, ws.state + HS * HS, s_final);
}

// dk and dv of one query head, chunks in reverse. R is the gradient reaching the state at the end
// of the current chunk from later tokens (seeded with dfinal); after chunk 0 it is dinitial.
template <typename T>
void backward_kv_head(Head<const T> q, Head<const T> k, Head<const T> v, Head<const T> dout,
                      Head<T> dk, Head<T> dv, int64_t Tn, const double* dfinal, double* dinitial,
                      Workspace<T>& ws) {
  const int64_t HS = ws.HS, chunk = ws.chunk;
  if (dfinal) {
    std::copy(dfinal, dfinal + HS * HS, ws.state);
  } else {
    std::fill(ws.state, ws.state + HS * HS, 0.0);
  }
  const int64_t chunks = (Tn + chunk - 1) / chunk;
  for (int64_t n = chunks - 1; n >= 0; --n) {
    const int64_t t0 = n * chunk, L = std::min(chunk, Tn - t0);
    ws.state_to_t();
    for (int64_t d = 0; d < HS; ++d)
      for (int64_t e = 0; e < HS; ++e) ws.st_t[e * HS + d] = ws.st[d * HS + e];
    ws.load_transposed(q, t0, L, ws.tile_a);
    ws.load_transposed(dout, t0, L, ws.tile_b);
    for (int64_t j = 0; j < L; ++j) {
      const T* kj = k.row(t0 + j);
      const T* vj = v.row(t0 + j);
      T* dkj = dk.row(t0 + j);
      T* dvj = dv.row(t0 + j);
      // Intra-chunk: queries i >= j of this chunk.
      ws.row_times_tile(kj, ws.tile_a, j, L, ws.s_a);  // q_i . k_j
      ws.row_times_tile(vj, ws.tile_b, j, L, ws.s_b);  // do_i . v_j
      std::fill(dkj, dkj + HS, T{0});
      std::fill(dvj, dvj + HS, T{0});
      for (int64_t i = j; i < L; ++i) {
        axpy(ws.pw[i - j] * ws.s_b[i], q.row(t0 + i), dkj, HS);
        axpy(ws.pw[i - j] * ws.s_a[i], dout.row(t0 + i), dvj, HS);
      }
      // Inter-chunk: dk_j += lambda^(L-1-j) R v_j, dv_j += lambda^(L-1-j) R^T k_j.
      const T w = ws.pw[L - 1 - j];
      for (int64_t e = 0; e < HS; ++e) axpy(w * vj[e], ws.st_t + e * HS, dkj, HS);
      for (int64_t d = 0; d < HS; ++d) axpy(w * kj[d], ws.st + d * HS, dvj, HS);
    }
    if (n > 0 || dinitial) {
      std::fill(ws.increment, ws.increment + HS * HS, T{0});
      for (int64_t i = 0; i < L; ++i) {
        const T* qi = q.row(t0 + i);
        const T* doi = dout.row(t0 + i);
        const T w = ws.pw[i + 1];
        for (int64_t d = 0; d < HS; ++d) axpy(w * qi[d], doi, ws.increment + d * HS, HS);
      }
      ws.advance_state(L);
    }
  }
  if (dinitial) std::copy(ws.state, ws.state + HS * HS, dinitial);
}

// dst (B, T, NKV, HS) = per-head gradients (B, T, NH, HS) summed over each group in head order.
template <typename T>
void reduce_groups(const TensorView& per_head, const TensorView& dst, const Dims& d) {
  const T* src = per_head.data<T>();
  T* out = dst.data<T>();
  const int64_t rows = d.B * d.T, G = d.group();
  const bool parallel = rows * d.NH * d.HS >= kMinParallelWork;
#pragma omp parallel for schedule(static) if (parallel)
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t g = 0; g < d.NKV; ++g) {
      T* o = out + (r * d.NKV + g) * d.HS;
      const T* s = src + (r * d.NH + g * G) * d.HS;
      std::copy(s, s + d.HS, o);
      for (int64_t h = 1; h < G; ++h) axpy(T{1}, s + h * d.HS, o, d.HS);
    }
  }
}

int region_threads(const Dims& dm, int64_t chunk) { return dm.parallel(chunk) ? num_threads() : 1; }

// One Workspace per thread of the parallel region, from the default resource of q's device.
ScratchBuffer thread_workspaces(const Dims& dm, int64_t chunk, const TensorView& q) {
  const size_t bytes = q.dtype() == DType::kF64 ? Workspace<double>::bytes(dm.HS, chunk)
                                                : Workspace<float>::bytes(dm.HS, chunk);
  return ScratchBuffer(bytes, region_threads(dm, chunk), default_resource(q.device()));
}

}  // namespace

std::vector<double> alibi_decays(int64_t NH) {
  std::vector<double> decays(static_cast<size_t>(NH));
  for (int64_t h = 0; h < NH; ++h)
    decays[h] = std::exp(-std::exp2(-8.0 * static_cast<double>(h + 1) / static_cast<double>(NH)));
  return decays;
}

DType linear_attention_state_dtype(DType activations) {
  MEMENTO_EXPECT(activations == DType::kF32 || activations == DType::kF64, ShapeError,
                 "linear attention: the CPU backend takes f32 or f64, got ",
                 dtype_name(activations));
  return DType::kF64;
}

void linear_attention_forward(const TensorView& q, const TensorView& k, const TensorView& v,
                              const TensorView& out, std::span<const double> decay, int64_t chunk,
                              const TensorView& initial_state, const TensorView& final_state) {
  MEMENTO_CUDA_DISPATCH(
      q, cuda::linear_attention_forward(q, k, v, out, decay, chunk, initial_state, final_state));
  const Dims dm = check_inputs(q, k, v, decay, chunk, "linear_attention_forward");
  expect_shape(out, q.shape(), "linear_attention_forward out");
  expect_dtype(out, q.dtype(), "linear_attention_forward out");
  check_state(initial_state, dm, q.dtype(), "linear_attention_forward initial_state");
  check_state(final_state, dm, q.dtype(), "linear_attention_forward final_state");
  const ScratchBuffer scratch = thread_workspaces(dm, chunk, q);
  if (any_meta({q, k, v, out, initial_state, final_state})) return;
  dispatch_float(q.dtype(), "linear_attention_forward", "q", [&](auto zero) {
    using T = decltype(zero);
#pragma omp parallel num_threads(region_threads(dm, chunk)) if (dm.parallel(chunk))
    {
      Workspace<T> ws(dm.HS, chunk, scratch.slice<void>(omp_get_thread_num()));
#pragma omp for collapse(2) schedule(dynamic, 1)
      for (int64_t b = 0; b < dm.B; ++b) {
        for (int64_t h = 0; h < dm.NH; ++h) {
          const int64_t g = h / dm.group();
          ws.set_decay(decay.empty() ? 1.0 : decay[h]);
          forward_head<T>(head<const T>(q, b, h), head<const T>(k, b, g), head<const T>(v, b, g),
                          head<T>(out, b, h), dm.T, state_at(initial_state, dm, b, h), false,
                          state_at_mut(final_state, dm, b, h), ws);
        }
      }
    }
  });
}

void linear_attention_backward(const TensorView& q, const TensorView& k, const TensorView& v,
                               const TensorView& dout, const TensorView& dq, const TensorView& dk,
                               const TensorView& dv, std::span<const double> decay, int64_t chunk,
                               const TensorView& initial_state, const TensorView& dfinal_state,
                               const TensorView& dinitial_state) {
  MEMENTO_CUDA_DISPATCH(
      q, cuda::linear_attention_backward(q, k, v, dout, dq, dk, dv, decay, chunk, initial_state,
                                         dfinal_state, dinitial_state));
  const Dims dm = check_inputs(q, k, v, decay, chunk, "linear_attention_backward");
  for (const TensorView* t : {&dout, &dq}) {
    expect_shape(*t, q.shape(), "linear_attention_backward dout/dq");
    expect_dtype(*t, q.dtype(), "linear_attention_backward dout/dq");
  }
  for (const TensorView* t : {&dk, &dv}) {
    expect_shape(*t, k.shape(), "linear_attention_backward dk/dv");
    expect_dtype(*t, q.dtype(), "linear_attention_backward dk/dv");
  }
  check_state(initial_state, dm, q.dtype(), "linear_attention_backward initial_state");
  check_state(dfinal_state, dm, q.dtype(), "linear_attention_backward dfinal_state");
  check_state(dinitial_state, dm, q.dtype(), "linear_attention_backward dinitial_state");
  // With grouped heads each query head writes its own dk, dv rows, summed per group afterwards,
  // so the (b, h) tasks stay independent. Allocated before the kMeta test: the dry run counts
  // them too.
  const bool grouped = dm.NH != dm.NKV;
  const Tensor dk_heads = grouped ? Tensor::empty(q.shape(), q.dtype(), q.device()) : Tensor();
  const Tensor dv_heads = grouped ? Tensor::empty(q.shape(), q.dtype(), q.device()) : Tensor();
  const ScratchBuffer scratch = thread_workspaces(dm, chunk, q);
  if (any_meta({q, k, v, dout, dq, dk, dv, initial_state, dfinal_state, dinitial_state})) return;
  dispatch_float(q.dtype(), "linear_attention_backward", "q", [&](auto zero) {
    using T = decltype(zero);
    const TensorView dk_target = grouped ? dk_heads.view() : dk;
    const TensorView dv_target = grouped ? dv_heads.view() : dv;
#pragma omp parallel num_threads(region_threads(dm, chunk)) if (dm.parallel(chunk))
    {
      Workspace<T> ws(dm.HS, chunk, scratch.slice<void>(omp_get_thread_num()));
#pragma omp for collapse(2) schedule(dynamic, 1)
      for (int64_t b = 0; b < dm.B; ++b) {
        for (int64_t h = 0; h < dm.NH; ++h) {
          const int64_t g = h / dm.group(), target = grouped ? h : g;
          ws.set_decay(decay.empty() ? 1.0 : decay[h]);
          const Head<const T> qh = head<const T>(q, b, h), kh = head<const T>(k, b, g),
                              vh = head<const T>(v, b, g), doh = head<const T>(dout, b, h);
          // dq_t = sum_{j<=t} lambda^(t-j) (do_t . v_j) k_j + lambda^(t+1) do_t P^T: the forward
          // pass with (q, k, v) = (do, v, k) and the transposed initial state.
          forward_head<T>(doh, vh, kh, head<T>(dq, b, h), dm.T, state_at(initial_state, dm, b, h),
                          true, nullptr, ws);
          backward_kv_head<T>(qh, kh, vh, doh, head<T>(dk_target, b, target),
                              head<T>(dv_target, b, target), dm.T, state_at(dfinal_state, dm, b, h),
                              state_at_mut(dinitial_state, dm, b, h), ws);
        }
      }
    }
    if (grouped) {
      reduce_groups<T>(dk_heads, dk, dm);
      reduce_groups<T>(dv_heads, dv, dm);
    }
  });
}

}  // namespace memento::ops
