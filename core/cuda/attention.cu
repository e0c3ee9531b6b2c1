// Attention ops on CUDA tensors: shape checks, the choice between the flash kernels
// (attention_flash_*.cu) and the warp-per-row kernels here, which take any head size up to 256
// in bf16 or fp32 with fp32 math, and the backward's delta = rowsum(dout * out) kernel.
#include "core/cuda/attention.h"

#include <cstdint>
#include <initializer_list>
#include <type_traits>

#include "core/cuda/attention_flash.cuh"
#include "core/cuda/check.h"
#include "core/cuda/kernel_common.cuh"

namespace memento::ops::cuda {
namespace {

using memento::cuda::detail::from_f32;
using memento::cuda::detail::kWarpSize;
using memento::cuda::detail::to_f32;
using memento::cuda::detail::warp_sum;

constexpr int kWarpsPerBlock = 8;
constexpr int kThreads = kWarpsPerBlock * kWarpSize;
// Head-size elements per lane in the warp-per-row kernels: HS <= 32 * 8 = 256.
constexpr int kPerLane = static_cast<int>(kMaxAttentionHeadSize) / kWarpSize;

// Loads row[lane + 32 c] (0 past HS) into r[c].
template <typename T>
__device__ __forceinline__ void load_row(float (&r)[kPerLane], const T* row, int HS, int lane) {
#pragma unroll
  for (int c = 0; c < kPerLane; ++c) {
    const int d = lane + c * kWarpSize;
    r[c] = d < HS ? to_f32(row[d]) : 0.f;
  }
}

template <typename T>
__device__ __forceinline__ float dot_row(const float (&r)[kPerLane], const T* row, int HS,
                                         int lane) {
  float s = 0.f;
#pragma unroll
  for (int c = 0; c < kPerLane; ++c) {
    const int d = lane + c * kWarpSize;
    if (d < HS) s += r[c] * to_f32(row[d]);
  }
  return warp_sum(s);
}

template <typename T>
__device__ __forceinline__ void store_row(T* row, const float (&r)[kPerLane], float scale, int HS,
                                          int lane) {
#pragma unroll
  for (int c = 0; c < kPerLane; ++c) {
    const int d = lane + c * kWarpSize;
    if (d < HS) row[d] = from_f32<T>(r[c] * scale);
  }
}

// One warp per query row (b, h, i), index ((b * NH + h) * T + i): an online softmax over the
// keys 0..i, one key at a time.
template <typename T>
__global__ void attention_forward_warp_per_row(const T* __restrict__ q, const T* __restrict__ k,
                                               const T* __restrict__ v, T* __restrict__ out,
                                               float* __restrict__ lse, AttentionDims d,
                                               float scale) {
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + threadIdx.x / kWarpSize;
  const int lane = static_cast<int>(threadIdx.x % kWarpSize);
  if (row >= d.B * d.NH * d.T) return;
  const int HS = static_cast<int>(d.HS);
  const int64_t i = row % d.T, h = row / d.T % d.NH, b = row / (d.T * d.NH);
  const int64_t g = h / (d.NH / d.NKV);
  const int64_t q_ld = d.NH * d.HS, kv_ld = d.NKV * d.HS;
  const T* kh = k + (b * d.T * d.NKV + g) * d.HS;  // (T, kv_ld)
  const T* vh = v + (b * d.T * d.NKV + g) * d.HS;  // (T, kv_ld)
  const int64_t q_row = (b * d.T + i) * q_ld + h * d.HS;
  float qr[kPerLane], acc[kPerLane] = {};
  load_row(qr, q + q_row, HS, lane);
  float m = -INFINITY, l = 0.f;
  for (int64_t j = 0; j <= i; ++j) {
    const float s = dot_row(qr, kh + j * kv_ld, HS, lane) * scale;
    const float m_new = fmaxf(m, s);
    const float alpha = expf(m - m_new);
    const float p = expf(s - m_new);
    l = l * alpha + p;
    m = m_new;
    const T* vr = vh + j * kv_ld;
#pragma unroll
    for (int c = 0; c < kPerLane; ++c) {
      const int dd = lane + c * kWarpSize;
      acc[c] = acc[c] * alpha + (dd < HS ? p * to_f32(vr[dd]) : 0.f);
    }
  }
  store_row(out + q_row, acc, 1.f / l, HS, lane);
  if (lane == 0) lse[row] = m + logf(l);
}

// delta (B, NH, T) = rowsum(dout * out), one warp per row (b, i, h) in the (B, T, NH) order of
// the inputs so that consecutive warps read consecutive memory.
template <typename T>
__global__ void attention_backward_delta_warp_per_row(const T* __restrict__ out,
                                                      const T* __restrict__ dout,
                                                      float* __restrict__ delta, AttentionDims d) {
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + threadIdx.x / kWarpSize;
  const int lane = static_cast<int>(threadIdx.x % kWarpSize);
  if (row >= d.B * d.T * d.NH) return;
  const int64_t h = row % d.NH, i = row / d.NH % d.T, b = row / (d.NH * d.T);
  const T* o = out + row * d.HS;
  const T* dor = dout + row * d.HS;
  float s = 0.f;
  for (int64_t c = lane; c < d.HS; c += kWarpSize) s += to_f32(o[c]) * to_f32(dor[c]);
  s = warp_sum(s);
  if (lane == 0) delta[(b * d.NH + h) * d.T + i] = s;
}

// One warp per query row (b, h, i): dq_i = scale * sum_{j <= i} dS_ij k_j.
template <typename T>
__global__ void attention_backward_dq_warp_per_row(
    const T* __restrict__ q, const T* __restrict__ k, const T* __restrict__ v,
    const T* __restrict__ dout, const float* __restrict__ lse, const float* __restrict__ delta,
    T* __restrict__ dq, AttentionDims d, float scale) {
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + threadIdx.x / kWarpSize;
  const int lane = static_cast<int>(threadIdx.x % kWarpSize);
  if (row >= d.B * d.NH * d.T) return;
  const int HS = static_cast<int>(d.HS);
  const int64_t i = row % d.T, h = row / d.T % d.NH, b = row / (d.T * d.NH);
  const int64_t g = h / (d.NH / d.NKV);
  const int64_t q_ld = d.NH * d.HS, kv_ld = d.NKV * d.HS;
  const T* kh = k + (b * d.T * d.NKV + g) * d.HS;
  const T* vh = v + (b * d.T * d.NKV + g) * d.HS;
  const int64_t q_row = (b * d.T + i) * q_ld + h * d.HS;
  float qr[kPerLane], dor[kPerLane], acc[kPerLane] = {};
  load_row(qr, q + q_row, HS, lane);
  load_row(dor, dout + q_row, HS, lane);
  const float lse_i = lse[row], delta_i = delta[row];
  for (int64_t j = 0; j <= i; ++j) {
    const T* kr = kh + j * kv_ld;
    const float p = expf(dot_row(qr, kr, HS, lane) * scale - lse_i);
    const float ds = p * (dot_row(dor, vh + j * kv_ld, HS, lane) - delta_i);
#pragma unroll
    for (int c = 0; c < kPerLane; ++c) {
      const int dd = lane + c * kWarpSize;
      if (dd < HS) acc[c] += ds * to_f32(kr[dd]);
    }
  }
  store_row(dq + q_row, acc, scale, HS, lane);
}

// One warp per key row (b, g, j): dk_j and dv_j sum over the group's query heads in order and
// the query rows i >= j in order.
template <typename T>
__global__ void attention_backward_dkv_warp_per_row(
    const T* __restrict__ q, const T* __restrict__ k, const T* __restrict__ v,
    const T* __restrict__ dout, const float* __restrict__ lse, const float* __restrict__ delta,
    T* __restrict__ dk, T* __restrict__ dv, AttentionDims d, float scale) {
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + threadIdx.x / kWarpSize;
  const int lane = static_cast<int>(threadIdx.x % kWarpSize);
  if (row >= d.B * d.NKV * d.T) return;
  const int HS = static_cast<int>(d.HS);
  const int64_t j = row % d.T, g = row / d.T % d.NKV, b = row / (d.T * d.NKV);
  const int64_t q_ld = d.NH * d.HS, kv_ld = d.NKV * d.HS;
  const int64_t kv_row = (b * d.T + j) * kv_ld + g * d.HS;
  float kr[kPerLane], vr[kPerLane], dk_acc[kPerLane] = {}, dv_acc[kPerLane] = {};
  load_row(kr, k + kv_row, HS, lane);
  load_row(vr, v + kv_row, HS, lane);
  const int64_t group = d.NH / d.NKV;
  for (int64_t h = g * group; h < (g + 1) * group; ++h) {
    const T* qh = q + (b * d.T * d.NH + h) * d.HS;      // (T, q_ld)
    const T* doh = dout + (b * d.T * d.NH + h) * d.HS;  // (T, q_ld)
    const float* lse_h = lse + (b * d.NH + h) * d.T;
    const float* delta_h = delta + (b * d.NH + h) * d.T;
    for (int64_t i = j; i < d.T; ++i) {
      const T* qi = qh + i * q_ld;
      const T* doi = doh + i * q_ld;
      const float p = expf(dot_row(kr, qi, HS, lane) * scale - lse_h[i]);
      const float ds = p * (dot_row(vr, doi, HS, lane) - delta_h[i]);
#pragma unroll
      for (int c = 0; c < kPerLane; ++c) {
        const int dd = lane + c * kWarpSize;
        if (dd < HS) {
          dv_acc[c] += p * to_f32(doi[dd]);
          dk_acc[c] += ds * to_f32(qi[dd]);
        }
      }
    }
  }
  store_row(dk + kv_row, dk_acc, scale, HS, lane);
  store_row(dv + kv_row, dv_acc, 1.f, HS, lane);
}

unsigned warp_blocks(int64_t warps) {
  return static_cast<unsigned>((warps + kWarpsPerBlock - 1) / kWarpsPerBlock);
}

// The flash kernels (bf16 only) need a head size they are built for and 16-byte aligned rows.
bool use_flash(AttentionDims d, std::initializer_list<const void*> pointers) {
  if (!detail::flash_head_size(d.HS)) return false;
  for (const void* p : pointers)
    if (reinterpret_cast<uintptr_t>(p) % 16 != 0) return false;
  return true;
}

AttentionDims check_shapes(const TensorView& q, const TensorView& k, const TensorView& v,
                           const TensorView& lse, const char* op) {
  MEMENTO_EXPECT(q.ndim() == 4, ShapeError, op, ": q must be (B, T, NH, HS), got ",
                 q.shape().str());
  MEMENTO_EXPECT(k.ndim() == 4, ShapeError, op, ": k must be (B, T, NKV, HS), got ",
                 k.shape().str());
  const AttentionDims d{q.size(0), q.size(1), q.size(2), k.size(2), q.size(3)};
  MEMENTO_EXPECT(d.NKV > 0 && d.NH % d.NKV == 0, ShapeError, op, ": query heads ", d.NH,
                 " must be a multiple of kv heads ", d.NKV);
  MEMENTO_EXPECT(d.HS >= 1 && d.HS <= kMaxAttentionHeadSize, ShapeError, op,
                 ": head size HS must be in [1, ", kMaxAttentionHeadSize, "] on the GPU, got ",
                 d.HS);
  const Shape kv{d.B, d.T, d.NKV, d.HS};
  MEMENTO_EXPECT(k.shape() == kv, ShapeError, op, ": expected k of shape ", kv.str(), ", got ",
                 k.shape().str());
  MEMENTO_EXPECT(v.shape() == kv, ShapeError, op, ": expected v of shape ", kv.str(), ", got ",
                 v.shape().str());
  const Shape lse_shape{d.B, d.NH, d.T};
  MEMENTO_EXPECT(lse.shape() == lse_shape, ShapeError, op, ": expected lse of shape ",
                 lse_shape.str(), ", got ", lse.shape().str());
  MEMENTO_EXPECT(k.dtype() == q.dtype() && v.dtype() == q.dtype(), ShapeError, op,
                 ": k and v must have q's dtype ", dtype_name(q.dtype()));
  MEMENTO_EXPECT(lse.dtype() == DType::kF32, ShapeError, op, ": lse must be f32, got ",
                 dtype_name(lse.dtype()));
  return d;
}

}  // namespace

template <typename T>
void launch_attention_forward(const T* q, const T* k, const T* v, T* out, float* lse,
                              AttentionDims d, cudaStream_t stream) {
  if (d.B * d.NH * d.T == 0) return;
  if constexpr (std::is_same_v<T, __nv_bfloat16>) {
    if (use_flash(d, {q, k, v, out})) {
      detail::launch_attention_forward_flash(q, k, v, out, lse, d, stream);
      return;
    }
  }
  const float scale = 1.f / sqrtf(static_cast<float>(d.HS));
  attention_forward_warp_per_row<T>
      <<<warp_blocks(d.B * d.NH * d.T), kThreads, 0, stream>>>(q, k, v, out, lse, d, scale);
  CUDA_CHECK_LAUNCH();
}

template <typename T>
void launch_attention_backward(const T* q, const T* k, const T* v, const T* out, const float* lse,
                               const T* dout, T* dq, T* dk, T* dv, float* delta, AttentionDims d,
                               cudaStream_t stream) {
  if (d.B * d.NH * d.T == 0) {
    // No query rows: dk and dv (empty unless NH = 0) are sums over nothing.
    const size_t kv_bytes = static_cast<size_t>(d.B * d.T * d.NKV * d.HS) * sizeof(T);
    if (kv_bytes > 0) {
      CUDA_CHECK(cudaMemsetAsync(dk, 0, kv_bytes, stream));
      CUDA_CHECK(cudaMemsetAsync(dv, 0, kv_bytes, stream));
    }
    return;
  }
  attention_backward_delta_warp_per_row<T>
      <<<warp_blocks(d.B * d.T * d.NH), kThreads, 0, stream>>>(out, dout, delta, d);
  CUDA_CHECK_LAUNCH();
  if constexpr (std::is_same_v<T, __nv_bfloat16>) {
    if (use_flash(d, {q, k, v, dout, dq, dk, dv})) {
      detail::launch_attention_backward_flash(q, k, v, dout, lse, delta, dq, dk, dv, d, stream);
      return;
    }
  }
  const float scale = 1.f / sqrtf(static_cast<float>(d.HS));
  attention_backward_dq_warp_per_row<T><<<warp_blocks(d.B * d.NH * d.T), kThreads, 0, stream>>>(
      q, k, v, dout, lse, delta, dq, d, scale);
  CUDA_CHECK_LAUNCH();
  attention_backward_dkv_warp_per_row<T><<<warp_blocks(d.B * d.NKV * d.T), kThreads, 0, stream>>>(
      q, k, v, dout, lse, delta, dk, dv, d, scale);
  CUDA_CHECK_LAUNCH();
}

template void launch_attention_forward<float>(const float*, const float*, const float*, float*,
                                              float*, AttentionDims, cudaStream_t);
template void launch_attention_forward<__nv_bfloat16>(const __nv_bfloat16*, const __nv_bfloat16*,
                                                      const __nv_bfloat16*, __nv_bfloat16*, float*,
                                                      AttentionDims, cudaStream_t);
template void launch_attention_backward<float>(const float*, const float*, const float*,
                                               const float*, const float*, const float*, float*,
                                               float*, float*, float*, AttentionDims, cudaStream_t);
template void launch_attention_backward<__nv_bfloat16>(const __nv_bfloat16*, const __nv_bfloat16*,
                                                       const __nv_bfloat16*, const __nv_bfloat16*,
                                                       const float*, const __nv_bfloat16*,
                                                       __nv_bfloat16*, __nv_bfloat16*,
                                                       __nv_bfloat16*, float*, AttentionDims,
                                                       cudaStream_t);

void attention_forward(const TensorView& q, const TensorView& k, const TensorView& v,
                       const TensorView& out, const TensorView& lse, cudaStream_t stream) {
  const char* op = "cuda::attention_forward";
  const AttentionDims d = check_shapes(q, k, v, lse, op);
  expect_shape(out, q.shape(), "cuda::attention_forward: out");
  expect_dtype(out, q.dtype(), "cuda::attention_forward: out");
  memento::cuda::detail::expect_cuda({q, k, v, out, lse}, op);
  memento::cuda::detail::dispatch_activation(q.dtype(), op, "q", [&](auto zero) {
    using T = decltype(zero);
    launch_attention_forward(static_cast<const T*>(q.raw()), static_cast<const T*>(k.raw()),
                             static_cast<const T*>(v.raw()), static_cast<T*>(out.raw()),
                             static_cast<float*>(lse.raw()), d, stream);
  });
}

void attention_backward(const TensorView& q, const TensorView& k, const TensorView& v,
                        const TensorView& out, const TensorView& lse, const TensorView& dout,
                        const TensorView& dq, const TensorView& dk, const TensorView& dv,
                        cudaStream_t stream) {
  const char* op = "cuda::attention_backward";
  const AttentionDims d = check_shapes(q, k, v, lse, op);
  expect_shape(out, q.shape(), "cuda::attention_backward: out");
  expect_shape(dout, q.shape(), "cuda::attention_backward: dout");
  expect_shape(dq, q.shape(), "cuda::attention_backward: dq");
  expect_shape(dk, k.shape(), "cuda::attention_backward: dk");
  expect_shape(dv, k.shape(), "cuda::attention_backward: dv");
  expect_dtype(out, q.dtype(), "cuda::attention_backward: out");
  expect_dtype(dout, q.dtype(), "cuda::attention_backward: dout");
  expect_dtype(dq, q.dtype(), "cuda::attention_backward: dq");
  expect_dtype(dk, q.dtype(), "cuda::attention_backward: dk");
  expect_dtype(dv, q.dtype(), "cuda::attention_backward: dv");
  memento::cuda::detail::expect_cuda({q, k, v, out, lse, dout, dq, dk, dv}, op);
  Tensor delta;  // (B, NH, T)
  if (lse.numel() > 0) delta = Tensor::empty(lse.shape(), DType::kF32, q.device());
  memento::cuda::detail::dispatch_activation(q.dtype(), op, "q", [&](auto zero) {
    using T = decltype(zero);
    launch_attention_backward(static_cast<const T*>(q.raw()), static_cast<const T*>(k.raw()),
                              static_cast<const T*>(v.raw()), static_cast<const T*>(out.raw()),
                              static_cast<const float*>(lse.raw()),
                              static_cast<const T*>(dout.raw()), static_cast<T*>(dq.raw()),
                              static_cast<T*>(dk.raw()), static_cast<T*>(dv.raw()),
                              delta.defined() ? delta.data<float>() : nullptr, d, stream);
  });
}

}  // namespace memento::ops::cuda
