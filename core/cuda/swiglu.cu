#include "core/cuda/swiglu.h"

#include <algorithm>
#include <initializer_list>

#include "core/cuda/check.h"
#include "core/cuda/kernel_common.cuh"

namespace memento::ops::cuda {
namespace {

using memento::cuda::detail::blocks_for;
using memento::cuda::detail::from_f32;
using memento::cuda::detail::global_thread;
using memento::cuda::detail::grid_threads;
using memento::cuda::detail::load_pack;
using memento::cuda::detail::Pack;
using memento::cuda::detail::store_pack;
using memento::cuda::detail::to_f32;
using memento::cuda::detail::vector_aligned;

constexpr int kThreads = 256;
// Elements per vectorised access: 16 bytes of bf16, 32 of f32 (one or two 16-byte words).
constexpr int kPack = 8;
// 2048 x 256 threads fill an H200's 132 SMs several times over; larger tensors loop.
constexpr int64_t kMaxBlocks = 2048;

// The fp32 math of one element, shared by the vectorised and the scalar walks.
__device__ __forceinline__ float swiglu_h(float g, float u) {
  const float s = 1.0f / (1.0f + expf(-g));
  return g * s * u;
}

struct SwigluGrads {
  float dg, du;
};
__device__ __forceinline__ SwigluGrads swiglu_grads(float dh, float g, float u) {
  const float s = 1.0f / (1.0f + expf(-g));
  // silu'(g) = s + g s (1 - s) = s (1 + g (1 - s)).
  return {dh * u * s * (1.0f + g * (1.0f - s)), dh * g * s};
}

// Where the kernels find element (r, f) of their (rows, F) operands: g, u, dg and du at r * ld + f
// (ld = 2F for a stacked [gate | up] input, F otherwise), h and dh at r * F + f. One row of n
// elements (rows = 1, F = ld = n) is the plain elementwise case.
struct Rows {
  int64_t rows, F, ld;
};

// The kernels walk rows x (F / kN) packs with a grid-stride loop, then the F % kN tail elements of
// every row one by one (kN == 1: every element, for buffers that are not 16-byte aligned or rows
// that are not whole packs). Pack i is (r, c) = (i / per_row, (i % per_row) kN), skipped when
// ld == F; the division is 32-bit while the pack count fits (narrow), 64-bit beyond. Not
// __restrict__: the backward may run in place; every pack is read whole before any of it is
// written.
struct PackIndex {
  int64_t in, out;  // offsets of the pack's first element in g/u/dg/du and in h/dh
};
__device__ __forceinline__ PackIndex pack_index(int64_t i, int64_t per_row, int kN, bool narrow,
                                                const Rows& a) {
  if (a.ld == a.F) return {i * kN, i * kN};
  const int64_t r =
      narrow ? static_cast<int64_t>(static_cast<uint32_t>(i) / static_cast<uint32_t>(per_row))
             : i / per_row;
  const int64_t c = (i - r * per_row) * kN;
  return {r * a.ld + c, r * a.F + c};
}
__device__ __forceinline__ PackIndex tail_index(int64_t t, int64_t tail, int64_t first,
                                                const Rows& a) {
  const int64_t r = t / tail;  // rows x tail elements: few, a 64-bit division is fine
  const int64_t c = first + (t - r * tail);
  return {r * a.ld + c, r * a.F + c};
}

template <typename T, int kN>
__global__ void swiglu_forward_elementwise(const T* g, const T* u, T* h, Rows a) {
  const int64_t per_row = a.F / kN;
  const int64_t packs = a.rows * per_row;
  const bool narrow = packs <= int64_t{0xffffffff};
  for (int64_t i = global_thread(); i < packs; i += grid_threads()) {
    const PackIndex k = pack_index(i, per_row, kN, narrow, a);
    const Pack<T, kN> gp = load_pack<kN>(g + k.in);
    const Pack<T, kN> up = load_pack<kN>(u + k.in);
    Pack<T, kN> hp;
#pragma unroll
    for (int j = 0; j < kN; ++j) hp.v[j] = from_f32<T>(swiglu_h(to_f32(gp.v[j]), to_f32(up.v[j])));
    store_pack<kN>(h + k.out, hp);
  }
  const int64_t tail = a.F - per_row * kN;
  if (tail == 0) return;
  for (int64_t t = global_thread(); t < a.rows * tail; t += grid_threads()) {
    const PackIndex k = tail_index(t, tail, per_row * kN, a);
    h[k.out] = from_f32<T>(swiglu_h(to_f32(g[k.in]), to_f32(u[k.in])));
  }
}

template <typename T, int kN>
__global__ void swiglu_backward_elementwise(const T* dh, const T* g, const T* u, T* dg, T* du, T* h,
                                            Rows a) {
  const int64_t per_row = a.F / kN;
  const int64_t packs = a.rows * per_row;
  const bool narrow = packs <= int64_t{0xffffffff};
  for (int64_t i = global_thread(); i < packs; i += grid_threads()) {
    const PackIndex k = pack_index(i, per_row, kN, narrow, a);
    const Pack<T, kN> dhp = load_pack<kN>(dh + k.out);
    const Pack<T, kN> gp = load_pack<kN>(g + k.in);
    const Pack<T, kN> up = load_pack<kN>(u + k.in);
    Pack<T, kN> dgp, dup, hp;
#pragma unroll
    for (int j = 0; j < kN; ++j) {
      const float gj = to_f32(gp.v[j]), uj = to_f32(up.v[j]);
      const SwigluGrads d = swiglu_grads(to_f32(dhp.v[j]), gj, uj);
      dgp.v[j] = from_f32<T>(d.dg);
      dup.v[j] = from_f32<T>(d.du);
      if (h) hp.v[j] = from_f32<T>(swiglu_h(gj, uj));
    }
    store_pack<kN>(dg + k.in, dgp);
    store_pack<kN>(du + k.in, dup);
    if (h) store_pack<kN>(h + k.out, hp);
  }
  const int64_t tail = a.F - per_row * kN;
  if (tail == 0) return;
  for (int64_t t = global_thread(); t < a.rows * tail; t += grid_threads()) {
    const PackIndex k = tail_index(t, tail, per_row * kN, a);
    const float gi = to_f32(g[k.in]), ui = to_f32(u[k.in]);
    const SwigluGrads d = swiglu_grads(to_f32(dh[k.out]), gi, ui);
    dg[k.in] = from_f32<T>(d.dg);
    du[k.in] = from_f32<T>(d.du);
    if (h) h[k.out] = from_f32<T>(swiglu_h(gi, ui));
  }
}

// The pack width the launch can use: kPack when every row is whole packs (or there is one row)
// and every pointer is 16-byte aligned, else 1.
bool packed_walk(const Rows& a, std::initializer_list<const void*> pointers) {
  if (a.rows > 1 && (a.F % kPack != 0 || a.ld % kPack != 0)) return false;
  for (const void* p : pointers)
    if (p != nullptr && !vector_aligned(p)) return false;
  return true;
}

// Blocks for a grid-stride walk over the rows x F elements in packs of kN (at least one).
unsigned grid_for(const Rows& a, int kN) {
  return blocks_for(a.rows * std::max<int64_t>(a.F / kN, 1), kThreads, kMaxBlocks);
}

}  // namespace

template <typename T>
void launch_swiglu_forward_rows(const T* g, const T* u, T* h, Rows a, cudaStream_t stream) {
  if (a.rows == 0 || a.F == 0) return;
  if (packed_walk(a, {g, u, h}))
    swiglu_forward_elementwise<T, kPack><<<grid_for(a, kPack), kThreads, 0, stream>>>(g, u, h, a);
  else
    swiglu_forward_elementwise<T, 1><<<grid_for(a, 1), kThreads, 0, stream>>>(g, u, h, a);
  CUDA_CHECK_LAUNCH();
}

template <typename T>
void launch_swiglu_backward_rows(const T* dh, const T* g, const T* u, T* dg, T* du, T* h, Rows a,
                                 cudaStream_t stream) {
  if (a.rows == 0 || a.F == 0) return;
  if (packed_walk(a, {dh, g, u, dg, du, h}))
    swiglu_backward_elementwise<T, kPack>
        <<<grid_for(a, kPack), kThreads, 0, stream>>>(dh, g, u, dg, du, h, a);
  else
    swiglu_backward_elementwise<T, 1>
        <<<grid_for(a, 1), kThreads, 0, stream>>>(dh, g, u, dg, du, h, a);
  CUDA_CHECK_LAUNCH();
}

template <typename T>
void launch_swiglu_forward(const T* g, const T* u, T* h, int64_t n, cudaStream_t stream) {
  launch_swiglu_forward_rows(g, u, h, Rows{1, n, n}, stream);
}

template <typename T>
void launch_swiglu_backward(const T* dh, const T* g, const T* u, T* dg, T* du, T* h, int64_t n,
                            cudaStream_t stream) {
  launch_swiglu_backward_rows(dh, g, u, dg, du, h, Rows{1, n, n}, stream);
}

template void launch_swiglu_forward<float>(const float*, const float*, float*, int64_t,
                                           cudaStream_t);
template void launch_swiglu_forward<__nv_bfloat16>(const __nv_bfloat16*, const __nv_bfloat16*,
                                                   __nv_bfloat16*, int64_t, cudaStream_t);
template void launch_swiglu_backward<float>(const float*, const float*, const float*, float*,
                                            float*, float*, int64_t, cudaStream_t);
template void launch_swiglu_backward<__nv_bfloat16>(const __nv_bfloat16*, const __nv_bfloat16*,
                                                    const __nv_bfloat16*, __nv_bfloat16*,
                                                    __nv_bfloat16*, __nv_bfloat16*, int64_t,
                                                    cudaStream_t);

void swiglu_forward(const TensorView& g, const TensorView& u, const TensorView& h,
                    cudaStream_t stream) {
  const char* op = "cuda::swiglu_forward";
  memento::cuda::detail::expect_cuda({g, u, h}, op);
  expect_shape(u, g.shape(), "cuda::swiglu_forward: u");
  expect_shape(h, g.shape(), "cuda::swiglu_forward: h");
  expect_dtype(u, g.dtype(), "cuda::swiglu_forward: u");
  expect_dtype(h, g.dtype(), "cuda::swiglu_forward: h");
  memento::cuda::detail::dispatch_activation(g.dtype(), op, "g", [&](auto zero) {
    using T = decltype(zero);
    launch_swiglu_forward(static_cast<const T*>(g.raw()), static_cast<const T*>(u.raw()),
                          static_cast<T*>(h.raw()), g.numel(), stream);
  });
}

void swiglu_backward(const TensorView& dh, const TensorView& g, const TensorView& u,
                     const TensorView& dg, const TensorView& du, const TensorView* h,
                     cudaStream_t stream) {
  const char* op = "cuda::swiglu_backward";
  memento::cuda::detail::expect_cuda({dh, g, u, dg, du}, op);
  for (const TensorView* t : {&dh, &u, &dg, &du}) {
    expect_shape(*t, g.shape(), "cuda::swiglu_backward: dh, u, dg, du");
    expect_dtype(*t, g.dtype(), "cuda::swiglu_backward: dh, u, dg, du");
  }
  if (h) {
    memento::cuda::detail::expect_cuda({*h}, op);
    expect_shape(*h, g.shape(), "cuda::swiglu_backward: h");
    expect_dtype(*h, g.dtype(), "cuda::swiglu_backward: h");
  }
  memento::cuda::detail::dispatch_activation(g.dtype(), op, "g", [&](auto zero) {
    using T = decltype(zero);
    launch_swiglu_backward(static_cast<const T*>(dh.raw()), static_cast<const T*>(g.raw()),
                           static_cast<const T*>(u.raw()), static_cast<T*>(dg.raw()),
                           static_cast<T*>(du.raw()), h ? static_cast<T*>(h->raw()) : nullptr,
                           g.numel(), stream);
  });
}

namespace {
// gu (..., 2F) and a tensor (..., F) of the same leading shape: the rows and F of the stacked ops.
Rows stacked_rows(const TensorView& gu, const TensorView& half, const char* what) {
  using ::memento::detail::concat;
  MEMENTO_EXPECT(gu.ndim() >= 1 && gu.size(-1) % 2 == 0, ShapeError, what,
                 ": gu: expected (..., 2F), got ", gu.shape().str());
  const int64_t F = gu.size(-1) / 2;
  expect_shape(half, gu.shape().with_dim(-1, F), concat(what, ": (..., F) operand").c_str());
  expect_dtype(half, gu.dtype(), concat(what, ": (..., F) operand").c_str());
  return Rows{F == 0 ? 0 : gu.numel() / (2 * F), F, 2 * F};
}
}  // namespace

void swiglu_stacked_forward(const TensorView& gu, const TensorView& h, cudaStream_t stream) {
  const char* op = "cuda::swiglu_stacked_forward";
  memento::cuda::detail::expect_cuda({gu, h}, op);
  const Rows a = stacked_rows(gu, h, op);
  memento::cuda::detail::dispatch_activation(gu.dtype(), op, "gu", [&](auto zero) {
    using T = decltype(zero);
    const T* g = static_cast<const T*>(gu.raw());
    launch_swiglu_forward_rows(g, g + a.F, static_cast<T*>(h.raw()), a, stream);
  });
}

void swiglu_stacked_backward(const TensorView& dh, const TensorView& gu, const TensorView& dgu,
                             const TensorView* h, cudaStream_t stream) {
  const char* op = "cuda::swiglu_stacked_backward";
  memento::cuda::detail::expect_cuda({dh, gu, dgu}, op);
  const Rows a = stacked_rows(gu, dh, op);
  expect_shape(dgu, gu.shape(), "cuda::swiglu_stacked_backward: dgu");
  expect_dtype(dgu, gu.dtype(), "cuda::swiglu_stacked_backward: dgu");
  if (h) {
    memento::cuda::detail::expect_cuda({*h}, op);
    stacked_rows(gu, *h, "cuda::swiglu_stacked_backward: h");
  }
  memento::cuda::detail::dispatch_activation(gu.dtype(), op, "gu", [&](auto zero) {
    using T = decltype(zero);
    const T* g = static_cast<const T*>(gu.raw());
    T* dg = static_cast<T*>(dgu.raw());
    launch_swiglu_backward_rows(static_cast<const T*>(dh.raw()), g, g + a.F, dg, dg + a.F,
                                h ? static_cast<T*>(h->raw()) : nullptr, a, stream);
  });
}

}  // namespace memento::ops::cuda
