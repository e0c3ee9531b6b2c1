#include "core/cuda/cross_entropy.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>

#include "core/cuda/check.h"
#include "core/cuda/kernel_common.cuh"

namespace memento::ops::cuda {
namespace {

using memento::cuda::detail::from_f32;
using memento::cuda::detail::kFullMask;
using memento::cuda::detail::kWarpSize;
using memento::cuda::detail::to_f32;

constexpr int kMaxThreads = 512;  // per row; 16-byte packs of a 32k vocabulary give 8 per thread
constexpr int kMaxWarps = kMaxThreads / kWarpSize;
constexpr int kPackBytes = 16;
constexpr int kTotalsThreads = 512;

static_assert(sizeof(CrossEntropyTotals) == 4 * sizeof(double), "totals live in 4 doubles");

// 16 bytes of T as fp32 values: 4 floats or 8 bf16 (bf16 is the top half of an fp32, so
// widening is a shift; element 0 sits in the low bits of the first word).
template <typename T>
struct Pack;
template <>
struct Pack<float> {
  static constexpr int kSize = 4;
  __device__ static void unpack(uint4 r, float (&v)[kSize]) {
    v[0] = __uint_as_float(r.x);
    v[1] = __uint_as_float(r.y);
    v[2] = __uint_as_float(r.z);
    v[3] = __uint_as_float(r.w);
  }
  __device__ static uint4 pack(const float (&v)[kSize]) {
    return make_uint4(__float_as_uint(v[0]), __float_as_uint(v[1]), __float_as_uint(v[2]),
                      __float_as_uint(v[3]));
  }
};
template <>
struct Pack<__nv_bfloat16> {
  static constexpr int kSize = 8;
  __device__ static void unpack(uint4 r, float (&v)[kSize]) {
    const uint32_t w[4] = {r.x, r.y, r.z, r.w};
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      v[2 * k] = __uint_as_float(w[k] << 16);
      v[2 * k + 1] = __uint_as_float(w[k] & 0xffff0000u);
    }
  }
  __device__ static uint4 pack(const float (&v)[kSize]) {
    uint32_t w[4];
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      const uint32_t lo = __bfloat16_as_ushort(__float2bfloat16_rn(v[2 * k]));
      const uint32_t hi = __bfloat16_as_ushort(__float2bfloat16_rn(v[2 * k + 1]));
      w[k] = lo | (hi << 16);
    }
    return make_uint4(w[0], w[1], w[2], w[3]);
  }
};

// Online softmax statistics: (m, s) is the running max and the sum of exp(x - m). Merges (m2, s2)
// with one exp; a -inf max carries s = 0, so fully masked parts never make NaN.
__device__ __forceinline__ void merge(float& m, float& s, float m2, float s2) {
  if (m2 > m) {
    s = s * expf(m - m2) + s2;
    m = m2;
  } else if (m2 != -INFINITY) {
    s += s2 * expf(m2 - m);
  }
}

// Elements of a row before its first 16-byte boundary (at most V): the row's head is done one
// element per thread, then whole packs, then the tail (fewer than a pack).
template <typename T>
__device__ __forceinline__ int64_t head_elements(const T* row, int64_t V) {
  const auto misalign = static_cast<int64_t>(reinterpret_cast<uintptr_t>(row) % kPackBytes);
  return min(V, ((kPackBytes - misalign) % kPackBytes) / static_cast<int64_t>(sizeof(T)));
}

// Block `row` owns one row: pass 1 reads it once in 16-byte packs for the max and the sum of
// exponentials (fp32, online), the block merges the per-thread statistics in a fixed order, and
// pass 2 reads it again (mostly from L2) to write the gradient in the logits dtype. Not
// __restrict__ on logits and dlogits: they may be the same buffer. Every element of the row is
// read in pass 1 before the barrier that ends it, and written only after, so aliasing is safe in
// either loop shape.
template <typename T>
__global__ void cross_entropy_block_per_row(const T* logits, const int32_t* __restrict__ targets,
                                            T* dlogits, float grad_scale,
                                            float* __restrict__ row_loss, int64_t V) {
  using P = Pack<T>;
  __shared__ float warp_max[kMaxWarps];
  __shared__ float warp_sum[kMaxWarps];
  __shared__ float row_max;
  __shared__ float row_log_sum;
  const int64_t row = blockIdx.x;
  const int tid = static_cast<int>(threadIdx.x);
  const int threads = static_cast<int>(blockDim.x);
  const int32_t target = targets[row];
  const T* x = logits + row * V;                            // (V)
  T* d = dlogits == nullptr ? nullptr : dlogits + row * V;  // (V)

  // Ignored rows (and rows with target >= V, which the totals report as errors): no loss, a zero
  // gradient. The branch is uniform over the block, so leaving before the barriers is safe.
  if (target < 0 || target >= V) {
    if (d != nullptr)
      for (int64_t v = tid; v < V; v += threads) d[v] = from_f32<T>(0.f);
    if (tid == 0) row_loss[row] = 0.f;
    return;
  }

  const int64_t head = head_elements(x, V);
  const int64_t packs = (V - head) / P::kSize;
  const int64_t tail = head + packs * P::kSize;

  // Pass 1: per-thread statistics.
  float m = -INFINITY, s = 0.f;
  if (tid < head) merge(m, s, to_f32(x[tid]), 1.f);
  for (int64_t j = tid; j < packs; j += threads) {
    float v[P::kSize];
    P::unpack(*reinterpret_cast<const uint4*>(x + head + j * P::kSize), v);
    float pm = v[0];
#pragma unroll
    for (int k = 1; k < P::kSize; ++k) pm = fmaxf(pm, v[k]);
    float ps = 0.f;
    if (pm != -INFINITY) {
#pragma unroll
      for (int k = 0; k < P::kSize; ++k) ps += expf(v[k] - pm);
    }
    merge(m, s, pm, ps);
  }
  if (tail + tid < V) merge(m, s, to_f32(x[tail + tid]), 1.f);
  // Read before the barrier below: with dlogits == logits, pass 2 overwrites it.
  const float target_logit = tid == 0 ? to_f32(x[target]) : 0.f;

  // Block merge: a fixed butterfly in each warp, then warp 0's lane 0 merges the warps in order.
  for (int offset = kWarpSize / 2; offset > 0; offset /= 2) {
    const float m2 = __shfl_xor_sync(kFullMask, m, offset);
    const float s2 = __shfl_xor_sync(kFullMask, s, offset);
    merge(m, s, m2, s2);
  }
  const int warp = tid / kWarpSize;
  if (tid % kWarpSize == 0) {
    warp_max[warp] = m;
    warp_sum[warp] = s;
  }
  __syncthreads();
  if (tid == 0) {
    float bm = warp_max[0], bs = warp_sum[0];
    for (int w = 1; w < threads / kWarpSize; ++w) merge(bm, bs, warp_max[w], warp_sum[w]);
    // lse = max + log(sum) is never formed: its rounding would grow with the logits' offset.
    row_max = bm;
    row_log_sum = logf(bs);
    row_loss[row] = (bm - target_logit) + logf(bs);
  }
  __syncthreads();
  if (d == nullptr) return;

  // Pass 2: dlogits = (exp(x - max - log(sum)) - onehot) * grad_scale.
  const float x_max = row_max, log_sum = row_log_sum;
  auto grad = [&](float xv, int64_t v) {
    return (expf((xv - x_max) - log_sum) - (v == target ? 1.f : 0.f)) * grad_scale;
  };
  // d = x + (dlogits - logits) for every row, so one test decides whether d's packs line up with
  // x's (always when they alias or both rows start aligned).
  const bool packed =
      (reinterpret_cast<uintptr_t>(d) - reinterpret_cast<uintptr_t>(x)) % kPackBytes == 0;
  if (!packed) {
    for (int64_t v = tid; v < V; v += threads) d[v] = from_f32<T>(grad(to_f32(x[v]), v));
    return;
  }
  if (tid < head) d[tid] = from_f32<T>(grad(to_f32(x[tid]), tid));
  for (int64_t j = tid; j < packs; j += threads) {
    const int64_t v0 = head + j * P::kSize;
    float v[P::kSize];
    P::unpack(*reinterpret_cast<const uint4*>(x + v0), v);
#pragma unroll
    for (int k = 0; k < P::kSize; ++k) v[k] = grad(v[k], v0 + k);
    *reinterpret_cast<uint4*>(d + v0) = P::pack(v);
  }
  if (tail + tid < V) d[tail + tid] = from_f32<T>(grad(to_f32(x[tail + tid]), tail + tid));
}

// One block sums the row losses in fp64 (each thread a fixed strided set of rows, then a fixed
// tree), counts the rows with a target, and finds the first row whose target is >= V.
__global__ void cross_entropy_totals_one_block(const float* __restrict__ row_loss,
                                               const int32_t* __restrict__ targets, int64_t N,
                                               int64_t V, CrossEntropyTotals* __restrict__ totals) {
  __shared__ double loss[kTotalsThreads];
  __shared__ int64_t count[kTotalsThreads];
  __shared__ int64_t bad[kTotalsThreads];
  const int tid = static_cast<int>(threadIdx.x);
  double l = 0.0;
  int64_t c = 0, b = N;
  for (int64_t n = tid; n < N; n += kTotalsThreads) {
    l += static_cast<double>(row_loss[n]);
    const int32_t t = targets[n];
    c += t >= 0 ? 1 : 0;
    if (t >= V && b == N) b = n;  // rows ascend: the first one this thread sees is its smallest
  }
  loss[tid] = l;
  count[tid] = c;
  bad[tid] = b;
  __syncthreads();
  for (int stride = kTotalsThreads / 2; stride > 0; stride /= 2) {
    if (tid < stride) {
      loss[tid] += loss[tid + stride];
      count[tid] += count[tid + stride];
      bad[tid] = min(bad[tid], bad[tid + stride]);
    }
    __syncthreads();
  }
  if (tid == 0) {
    totals->loss_sum = loss[0];
    totals->count = count[0];
    totals->bad_row = bad[0];
    totals->bad_target = bad[0] < N ? targets[bad[0]] : 0;
  }
}

}  // namespace

template <typename T>
void launch_cross_entropy(const T* logits, const int32_t* targets, T* dlogits, float grad_scale,
                          float* row_loss, CrossEntropyTotals* totals, int64_t N, int64_t V,
                          cudaStream_t stream) {
  if (N == 0) return;
  const int64_t packs = (V + Pack<T>::kSize - 1) / Pack<T>::kSize;
  const int64_t warps = std::clamp<int64_t>((packs + kWarpSize - 1) / kWarpSize, 1, kMaxWarps);
  cross_entropy_block_per_row<T>
      <<<static_cast<unsigned>(N), static_cast<unsigned>(warps * kWarpSize), 0, stream>>>(
          logits, targets, dlogits, grad_scale, row_loss, V);
  CUDA_CHECK_LAUNCH();
  cross_entropy_totals_one_block<<<1, kTotalsThreads, 0, stream>>>(row_loss, targets, N, V, totals);
  CUDA_CHECK_LAUNCH();
}

template void launch_cross_entropy<float>(const float*, const int32_t*, float*, float, float*,
                                          CrossEntropyTotals*, int64_t, int64_t, cudaStream_t);
template void launch_cross_entropy<__nv_bfloat16>(const __nv_bfloat16*, const int32_t*,
                                                  __nv_bfloat16*, float, float*,
                                                  CrossEntropyTotals*, int64_t, int64_t,
                                                  cudaStream_t);

CrossEntropyResult cross_entropy(const TensorView& logits, const TensorView& targets,
                                 const TensorView& dlogits, double grad_scale,
                                 cudaStream_t stream) {
  const char* op = "cuda::cross_entropy";
  const bool with_grad = dlogits.raw() != nullptr;
  memento::cuda::detail::expect_cuda({logits, targets}, op);
  if (with_grad) memento::cuda::detail::expect_cuda({dlogits}, op);
  MEMENTO_EXPECT(logits.ndim() == 2, ShapeError, op, ": logits: expected (N, V), got ",
                 logits.shape().str());
  const int64_t N = logits.size(0), V = logits.size(1);
  MEMENTO_EXPECT(N <= std::numeric_limits<int32_t>::max(), ShapeError, op, ": logits: N = ", N,
                 " rows do not fit one launch");
  expect_shape(targets, Shape{N}, "cuda::cross_entropy: targets");
  expect_dtype(targets, DType::kI32, "cuda::cross_entropy: targets");
  if (with_grad) {
    expect_shape(dlogits, logits.shape(), "cuda::cross_entropy: dlogits");
    expect_dtype(dlogits, logits.dtype(), "cuda::cross_entropy: dlogits");
  }
  memento::cuda::detail::dispatch_activation(logits.dtype(), op, "logits", [](auto) {});
  if (N == 0) return {};

  const Tensor row_loss = Tensor::empty(Shape{N}, DType::kF32, logits.device());  // (N)
  const Tensor totals = Tensor::empty(Shape{4}, DType::kF64, logits.device());    // totals
  auto* device_totals = reinterpret_cast<CrossEntropyTotals*>(totals.data<double>());
  memento::cuda::detail::dispatch_activation(logits.dtype(), op, "logits", [&](auto zero) {
    using T = decltype(zero);
    launch_cross_entropy(
        static_cast<const T*>(logits.raw()), static_cast<const int32_t*>(targets.raw()),
        with_grad ? static_cast<T*>(dlogits.raw()) : nullptr, static_cast<float>(grad_scale),
        row_loss.data<float>(), device_totals, N, V, stream);
  });
  CrossEntropyTotals host{};
  CUDA_CHECK(cudaMemcpyAsync(&host, device_totals, sizeof(host), cudaMemcpyDeviceToHost, stream));
  CUDA_CHECK(cudaStreamSynchronize(stream));
  MEMENTO_EXPECT(host.bad_row >= N, DataError, "cross_entropy: target ", host.bad_target,
                 " at row ", host.bad_row, " is outside the vocabulary [0, ", V, ")");
  return {host.loss_sum, host.count};
}

}  // namespace memento::ops::cuda
