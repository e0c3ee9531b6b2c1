#include "core/cuda/elementwise.h"

#include <type_traits>

#include "core/cuda/check.h"
#include "core/cuda/kernel_common.cuh"

namespace memento::ops::cuda {
namespace {

using memento::cuda::detail::blocks_for;
using memento::cuda::detail::from_f32;
using memento::cuda::detail::global_thread;
using memento::cuda::detail::grid_threads;
using memento::cuda::detail::kWarpSize;
using memento::cuda::detail::load_pack;
using memento::cuda::detail::Pack;
using memento::cuda::detail::store_pack;
using memento::cuda::detail::to_f32;
using memento::cuda::detail::vector_aligned;
using memento::cuda::detail::warp_sum;

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / kWarpSize;
// Elements per vectorised access: 16 bytes of bf16, 32 of f32 (one or two 16-byte loads).
constexpr int kPack = 8;
// Grid-stride kernels launch at most this many blocks: 2048 x 256 threads fill an H100's 132 SMs
// several times over; larger tensors loop.
constexpr int64_t kMaxBlocks = 2048;
// sum_of_squares writes at most this many block partials; the count depends on numel alone, so
// the summation order does not depend on the GPU model.
constexpr int64_t kMaxSumBlocks = 1024;

// Each kernel walks n / kN packs with a grid-stride loop, then the n % kN tail elements one by
// one. acc and x may alias (add_(x, x) doubles x): no __restrict__ on them.
template <typename T, int kN>
__global__ void add_grid_stride(T* acc, const T* x, int64_t n) {
  const int64_t packs = n / kN;
  for (int64_t i = global_thread(); i < packs; i += grid_threads()) {
    Pack<T, kN> a = load_pack<kN>(acc + i * kN);
    const Pack<T, kN> b = load_pack<kN>(x + i * kN);
#pragma unroll
    for (int j = 0; j < kN; ++j) a.v[j] = from_f32<T>(to_f32(a.v[j]) + to_f32(b.v[j]));
    store_pack<kN>(acc + i * kN, a);
  }
  for (int64_t i = packs * kN + global_thread(); i < n; i += grid_threads())
    acc[i] = from_f32<T>(to_f32(acc[i]) + to_f32(x[i]));
}

template <typename T, int kN>
__global__ void scale_grid_stride(T* __restrict__ x, float alpha, int64_t n) {
  const int64_t packs = n / kN;
  for (int64_t i = global_thread(); i < packs; i += grid_threads()) {
    Pack<T, kN> a = load_pack<kN>(x + i * kN);
#pragma unroll
    for (int j = 0; j < kN; ++j) a.v[j] = from_f32<T>(to_f32(a.v[j]) * alpha);
    store_pack<kN>(x + i * kN, a);
  }
  for (int64_t i = packs * kN + global_thread(); i < n; i += grid_threads())
    x[i] = from_f32<T>(to_f32(x[i]) * alpha);
}

template <typename S, typename D, int kN>
__global__ void convert_grid_stride(const S* __restrict__ src, D* __restrict__ dst, int64_t n) {
  const int64_t packs = n / kN;
  for (int64_t i = global_thread(); i < packs; i += grid_threads()) {
    const Pack<S, kN> s = load_pack<kN>(src + i * kN);
    Pack<D, kN> d;
#pragma unroll
    for (int j = 0; j < kN; ++j) d.v[j] = from_f32<D>(to_f32(s.v[j]));
    store_pack<kN>(dst + i * kN, d);
  }
  for (int64_t i = packs * kN + global_thread(); i < n; i += grid_threads())
    dst[i] = from_f32<D>(to_f32(src[i]));
}

// Sum over the block in a fixed order (lanes by butterfly, warps in index order); the result is
// valid in thread 0.
__device__ double block_sum(double x) {
  __shared__ double warp_totals[kWarps];
  x = warp_sum(x);
  const int warp = static_cast<int>(threadIdx.x) / kWarpSize;
  if (threadIdx.x % kWarpSize == 0) warp_totals[warp] = x;
  __syncthreads();
  double total = 0;
  if (threadIdx.x == 0)
    for (int w = 0; w < kWarps; ++w) total += warp_totals[w];
  return total;
}

template <typename T, int kN>
__global__ void sum_squares_block_partials(const T* __restrict__ x, int64_t n,
                                           double* __restrict__ partial) {
  double acc = 0;
  const int64_t packs = n / kN;
  for (int64_t i = global_thread(); i < packs; i += grid_threads()) {
    const Pack<T, kN> p = load_pack<kN>(x + i * kN);
    float pack_sum = 0.f;
#pragma unroll
    for (int j = 0; j < kN; ++j) {
      const float v = to_f32(p.v[j]);
      pack_sum = fmaf(v, v, pack_sum);
    }
    acc += static_cast<double>(pack_sum);
  }
  for (int64_t i = packs * kN + global_thread(); i < n; i += grid_threads()) {
    const float v = to_f32(x[i]);
    acc += static_cast<double>(v * v);
  }
  const double total = block_sum(acc);
  if (threadIdx.x == 0) partial[blockIdx.x] = total;
}

__global__ void sum_partials_one_block(const double* __restrict__ partial, int64_t count,
                                       double* __restrict__ out) {
  double acc = 0;
  for (int64_t i = threadIdx.x; i < count; i += kThreads) acc += partial[i];
  const double total = block_sum(acc);
  if (threadIdx.x == 0) *out = total;
}

// Blocks for a grid-stride walk over n elements in packs of kN (at least one: the tail).
template <int kN>
unsigned grid_for(int64_t n) {
  return blocks_for(n / kN, kThreads, kMaxBlocks);
}

void expect_same_device(const TensorView& a, const TensorView& b, const char* what) {
  MEMENTO_EXPECT(a.device() == b.device(), ShapeError, what, " is on ", device_name(b.device()),
                 ", expected ", device_name(a.device()));
}

}  // namespace

int64_t sum_of_squares_partial_count(int64_t n) {
  const int64_t per_block = static_cast<int64_t>(kThreads) * kPack;
  return std::clamp<int64_t>((n + per_block - 1) / per_block, 1, kMaxSumBlocks);
}

template <typename T>
void launch_add(T* acc, const T* x, int64_t n, cudaStream_t stream) {
  if (n == 0) return;
  if (vector_aligned(acc) && vector_aligned(x))
    add_grid_stride<T, kPack><<<grid_for<kPack>(n), kThreads, 0, stream>>>(acc, x, n);
  else
    add_grid_stride<T, 1><<<grid_for<1>(n), kThreads, 0, stream>>>(acc, x, n);
  CUDA_CHECK_LAUNCH();
}

template <typename T>
void launch_scale(T* x, float alpha, int64_t n, cudaStream_t stream) {
  if (n == 0) return;
  if (vector_aligned(x))
    scale_grid_stride<T, kPack><<<grid_for<kPack>(n), kThreads, 0, stream>>>(x, alpha, n);
  else
    scale_grid_stride<T, 1><<<grid_for<1>(n), kThreads, 0, stream>>>(x, alpha, n);
  CUDA_CHECK_LAUNCH();
}

template <typename T>
void launch_sum_of_squares(const T* x, int64_t n, double* partial, double* out,
                           cudaStream_t stream) {
  const int64_t blocks = sum_of_squares_partial_count(n);
  if (vector_aligned(x))
    sum_squares_block_partials<T, kPack>
        <<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(x, n, partial);
  else
    sum_squares_block_partials<T, 1>
        <<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(x, n, partial);
  CUDA_CHECK_LAUNCH();
  sum_partials_one_block<<<1, kThreads, 0, stream>>>(partial, blocks, out);
  CUDA_CHECK_LAUNCH();
}

template <typename S, typename D>
void launch_convert(const S* src, D* dst, int64_t n, cudaStream_t stream) {
  if (n == 0) return;
  if (vector_aligned(src) && vector_aligned(dst))
    convert_grid_stride<S, D, kPack><<<grid_for<kPack>(n), kThreads, 0, stream>>>(src, dst, n);
  else
    convert_grid_stride<S, D, 1><<<grid_for<1>(n), kThreads, 0, stream>>>(src, dst, n);
  CUDA_CHECK_LAUNCH();
}

template void launch_add<float>(float*, const float*, int64_t, cudaStream_t);
template void launch_add<__nv_bfloat16>(__nv_bfloat16*, const __nv_bfloat16*, int64_t,
                                        cudaStream_t);
template void launch_scale<float>(float*, float, int64_t, cudaStream_t);
template void launch_scale<__nv_bfloat16>(__nv_bfloat16*, float, int64_t, cudaStream_t);
template void launch_sum_of_squares<float>(const float*, int64_t, double*, double*, cudaStream_t);
template void launch_sum_of_squares<__nv_bfloat16>(const __nv_bfloat16*, int64_t, double*, double*,
                                                   cudaStream_t);
template void launch_convert<float, __nv_bfloat16>(const float*, __nv_bfloat16*, int64_t,
                                                   cudaStream_t);
template void launch_convert<__nv_bfloat16, float>(const __nv_bfloat16*, float*, int64_t,
                                                   cudaStream_t);

void add_(const TensorView& acc, const TensorView& x, cudaStream_t stream) {
  const char* op = "cuda::add_";
  memento::cuda::detail::expect_cuda({acc, x}, op);
  expect_same_device(acc, x, "cuda::add_: x");
  expect_shape(x, acc.shape(), "cuda::add_: x");
  expect_dtype(x, acc.dtype(), "cuda::add_: x");
  memento::cuda::detail::dispatch_activation(acc.dtype(), op, "acc", [&](auto zero) {
    using T = decltype(zero);
    launch_add(static_cast<T*>(acc.raw()), static_cast<const T*>(x.raw()), acc.numel(), stream);
  });
}

void scale_(const TensorView& x, double alpha, cudaStream_t stream) {
  const char* op = "cuda::scale_";
  memento::cuda::detail::expect_cuda({x}, op);
  memento::cuda::detail::dispatch_activation(x.dtype(), op, "x", [&](auto zero) {
    using T = decltype(zero);
    launch_scale(static_cast<T*>(x.raw()), static_cast<float>(alpha), x.numel(), stream);
  });
}

double sum_of_squares(const TensorView& x, cudaStream_t stream) {
  const char* op = "cuda::sum_of_squares";
  memento::cuda::detail::expect_cuda({x}, op);
  double result = 0;
  memento::cuda::detail::dispatch_activation(x.dtype(), op, "x", [&](auto zero) {
    using T = decltype(zero);
    const int64_t n = x.numel();
    if (n == 0) return;
    const int64_t blocks = sum_of_squares_partial_count(n);
    // (blocks + 1): the block partials, then the total.
    const Tensor scratch = Tensor::empty(Shape{blocks + 1}, DType::kF64, x.device());
    double* partial = scratch.data<double>();
    launch_sum_of_squares(static_cast<const T*>(x.raw()), n, partial, partial + blocks, stream);
    CUDA_CHECK(
        cudaMemcpyAsync(&result, partial + blocks, sizeof(double), cudaMemcpyDeviceToHost, stream));
    CUDA_CHECK(cudaStreamSynchronize(stream));
  });
  return result;
}

void convert(const TensorView& src, const TensorView& dst, cudaStream_t stream) {
  const char* op = "cuda::convert";
  memento::cuda::detail::expect_cuda({src, dst}, op);
  expect_same_device(src, dst, "cuda::convert: dst");
  expect_shape(dst, src.shape(), "cuda::convert: dst");
  memento::cuda::detail::dispatch_activation(src.dtype(), op, "src", [&](auto src_zero) {
    memento::cuda::detail::dispatch_activation(dst.dtype(), op, "dst", [&](auto dst_zero) {
      using S = decltype(src_zero);
      using D = decltype(dst_zero);
      if constexpr (std::is_same_v<S, D>) {
        if (src.numel() > 0)
          CUDA_CHECK(
              cudaMemcpyAsync(dst.raw(), src.raw(), src.bytes(), cudaMemcpyDeviceToDevice, stream));
      } else {
        launch_convert(static_cast<const S*>(src.raw()), static_cast<D*>(dst.raw()), src.numel(),
                       stream);
      }
    });
  });
}

}  // namespace memento::ops::cuda
