#include "core/cuda/rmsnorm.h"

#include "core/cuda/check.h"
#include "core/cuda/kernel_common.cuh"

namespace memento::ops::cuda {
namespace {

using memento::cuda::detail::from_f32;
using memento::cuda::detail::kVectorWidth;
using memento::cuda::detail::kWarpSize;
using memento::cuda::detail::load_pack;
using memento::cuda::detail::Pack;
using memento::cuda::detail::store_pack;
using memento::cuda::detail::to_f32;
using memento::cuda::detail::vector_aligned;
using memento::cuda::detail::warp_sum;

constexpr int kRowsPerBlock = 8;  // warps per block, one row each
constexpr int kThreads = kRowsPerBlock * kWarpSize;
// The weight gradient sums rows in at most this many fixed row blocks (boundaries depend on the
// row count alone), then adds the block partials in block order: bit-identical run to run.
constexpr int64_t kWeightRowBlocks = 256;
constexpr int kColumnsPerBlock = 256;
// Threads per block of the row-block partials, one pack of channels each: small blocks spread
// the few (C / pack) x 256 threads over all SMs.
constexpr int kPackThreads = 64;
// Loads issued before the first of them is used: the weight-gradient sums are serial chains
// (fixed order), so memory parallelism has to come from within each thread.
constexpr int kRowsInFlight = 8;
constexpr int kPartialsInFlight = 32;
// Few threads run these kernels (C / pack x 256 for the partials, C for their sum): a low
// minimum of resident blocks in __launch_bounds__ lets ptxas keep every load above in flight in
// registers instead of trading them for an occupancy the grid never reaches (without it, ptxas
// holds the partials kernel to 32-40 registers and so to one or two rows of loads at a time).
constexpr int kPartialMinBlocksPerSm = 8;
constexpr int kSumMinBlocksPerSm = 1;

// One warp per row; lane l takes the packs l, l + 32, ... of kN channels. kN > 1 needs C % kN == 0
// and x, y, weight (and residual) 16-byte aligned; kN == 1 is one channel at a time, any C. With
// residual (not null), the first pass stores x + residual, rounded to T, over x and sums the
// squares of the rounded values; the second pass reads back what the same lane stored.
template <typename T, int kN>
__global__ void rmsnorm_forward_warp_per_row(T* __restrict__ x, const T* __restrict__ residual,
                                             const float* __restrict__ weight, float eps,
                                             T* __restrict__ y, float* __restrict__ rstd,
                                             int64_t rows, int64_t C) {
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kRowsPerBlock + threadIdx.x / kWarpSize;
  const int lane = static_cast<int>(threadIdx.x % kWarpSize);
  if (row >= rows) return;
  T* xr = x + row * C;  // (C)
  T* yr = y + row * C;  // (C)
  const int64_t packs = C / kN;
  float sum_sq = 0.f;
  for (int64_t p = lane; p < packs; p += kWarpSize) {
    Pack<T, kN> xp = load_pack<kN>(xr + p * kN);
    if (residual != nullptr) {
      const Pack<T, kN> rp = load_pack<kN>(residual + row * C + p * kN);
#pragma unroll
      for (int j = 0; j < kN; ++j) xp.v[j] = from_f32<T>(to_f32(xp.v[j]) + to_f32(rp.v[j]));
      store_pack<kN>(xr + p * kN, xp);
    }
#pragma unroll
    for (int j = 0; j < kN; ++j) {
      const float v = to_f32(xp.v[j]);
      sum_sq += v * v;
    }
  }
  sum_sq = warp_sum(sum_sq);
  const float s = 1.0f / sqrtf(sum_sq / static_cast<float>(C) + eps);
  if (lane == 0) rstd[row] = s;
  for (int64_t p = lane; p < packs; p += kWarpSize) {
    const Pack<T, kN> xp = load_pack<kN>(xr + p * kN);
    const Pack<float, kN> wp = load_pack<kN>(weight + p * kN);
    Pack<T, kN> yp;
#pragma unroll
    for (int j = 0; j < kN; ++j) yp.v[j] = from_f32<T>(to_f32(xp.v[j]) * s * wp.v[j]);
    store_pack<kN>(yr + p * kN, yp);
  }
}

// One warp per row; lane l takes the packs l, l + 32, ... of kN channels. kN > 1 needs C % kN == 0
// and dy, x, dx, weight (and residual) 16-byte aligned; kN == 1 is one channel at a time, any C.
// residual, when not null, is added to dx in fp32.
template <typename T, int kN>
__global__ void rmsnorm_backward_dx_warp_per_row(const T* __restrict__ dy, const T* __restrict__ x,
                                                 const float* __restrict__ weight,
                                                 const float* __restrict__ rstd,
                                                 const T* __restrict__ residual, T* __restrict__ dx,
                                                 int64_t rows, int64_t C) {
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kRowsPerBlock + threadIdx.x / kWarpSize;
  const int lane = static_cast<int>(threadIdx.x % kWarpSize);
  if (row >= rows) return;
  const T* dyr = dy + row * C;  // (C)
  const T* xr = x + row * C;    // (C)
  T* dxr = dx + row * C;        // (C)
  const int64_t packs = C / kN;
  // sum over channels of dy * weight * x, in fp64: dx is the difference of two terms that nearly
  // cancel when x has a large mean, so an fp32 sum cost up to 7e-5 (fp32) and 1e-2 (bf16)
  // relative error against the fp64 reference on an H200.
  double dot = 0.0;
  for (int64_t p = lane; p < packs; p += kWarpSize) {
    const Pack<T, kN> dyp = load_pack<kN>(dyr + p * kN);
    const Pack<T, kN> xp = load_pack<kN>(xr + p * kN);
    const Pack<float, kN> wp = load_pack<kN>(weight + p * kN);
#pragma unroll
    for (int j = 0; j < kN; ++j)
      dot += static_cast<double>(to_f32(dyp.v[j]) * wp.v[j]) * static_cast<double>(to_f32(xp.v[j]));
  }
  dot = warp_sum(dot);
  const float s = rstd[row];
  const auto correction =
      static_cast<float>(static_cast<double>(s) * s * s * dot / static_cast<double>(C));
  for (int64_t p = lane; p < packs; p += kWarpSize) {
    const Pack<T, kN> dyp = load_pack<kN>(dyr + p * kN);
    const Pack<T, kN> xp = load_pack<kN>(xr + p * kN);
    const Pack<float, kN> wp = load_pack<kN>(weight + p * kN);
    float d[kN];
#pragma unroll
    for (int j = 0; j < kN; ++j)
      d[j] = s * to_f32(dyp.v[j]) * wp.v[j] - correction * to_f32(xp.v[j]);
    if (residual != nullptr) {
      const Pack<T, kN> rp = load_pack<kN>(residual + row * C + p * kN);
#pragma unroll
      for (int j = 0; j < kN; ++j) d[j] += to_f32(rp.v[j]);
    }
    Pack<T, kN> dxp;
#pragma unroll
    for (int j = 0; j < kN; ++j) dxp.v[j] = from_f32<T>(d[j]);
    store_pack<kN>(dxr + p * kN, dxp);
  }
}

// Block (channel tile, row block): each thread owns kN consecutive channels and sums
// dy * x * rstd over the rows of its row block in row order, kRowsInFlight rows of loads at a time;
// reads are coalesced along the channels. kN > 1 needs C % kN == 0 and dy, x, partial 16-byte
// aligned.
template <typename T, int kN>
__global__ void __launch_bounds__(kPackThreads, kPartialMinBlocksPerSm)
    rmsnorm_backward_dweight_row_block_partials(const T* __restrict__ dy, const T* __restrict__ x,
                                                const float* __restrict__ rstd,
                                                float* __restrict__ partial, int64_t rows,
                                                int64_t C, int64_t row_blocks) {
  const int64_t c = (static_cast<int64_t>(blockIdx.x) * kPackThreads + threadIdx.x) * kN;
  const int64_t b = blockIdx.y;
  if (c >= C) return;
  const int64_t begin = b * rows / row_blocks;
  const int64_t end = (b + 1) * rows / row_blocks;
  float acc[kN];
#pragma unroll
  for (int j = 0; j < kN; ++j) acc[j] = 0.f;
  int64_t r = begin;
  for (; r + kRowsInFlight <= end; r += kRowsInFlight) {
    Pack<T, kN> dyp[kRowsInFlight];
    Pack<T, kN> xp[kRowsInFlight];
    float s[kRowsInFlight];
#pragma unroll
    for (int k = 0; k < kRowsInFlight; ++k) {
      dyp[k] = load_pack<kN>(dy + (r + k) * C + c);
      xp[k] = load_pack<kN>(x + (r + k) * C + c);
      s[k] = rstd[r + k];
    }
#pragma unroll
    for (int k = 0; k < kRowsInFlight; ++k)
#pragma unroll
      for (int j = 0; j < kN; ++j) acc[j] += to_f32(dyp[k].v[j]) * to_f32(xp[k].v[j]) * s[k];
  }
  for (; r < end; ++r) {
    const Pack<T, kN> dyp = load_pack<kN>(dy + r * C + c);
    const Pack<T, kN> xp = load_pack<kN>(x + r * C + c);
#pragma unroll
    for (int j = 0; j < kN; ++j) acc[j] += to_f32(dyp.v[j]) * to_f32(xp.v[j]) * rstd[r];
  }
  Pack<float, kN> out;
#pragma unroll
  for (int j = 0; j < kN; ++j) out.v[j] = acc[j];
  store_pack<kN>(partial + b * C + c, out);
}

// dweight[c] += the row-block partials of channel c added in block order.
__global__ void __launch_bounds__(kColumnsPerBlock, kSumMinBlocksPerSm)
    rmsnorm_backward_dweight_sum_partials(const float* __restrict__ partial,
                                          float* __restrict__ dweight, int64_t C,
                                          int64_t row_blocks) {
  const int64_t c = static_cast<int64_t>(blockIdx.x) * kColumnsPerBlock + threadIdx.x;
  if (c >= C) return;
  float sum = 0.f;
  int64_t b = 0;
  for (; b + kPartialsInFlight <= row_blocks; b += kPartialsInFlight) {
    float p[kPartialsInFlight];
#pragma unroll
    for (int k = 0; k < kPartialsInFlight; ++k) p[k] = partial[(b + k) * C + c];
#pragma unroll
    for (int k = 0; k < kPartialsInFlight; ++k) sum += p[k];
  }
  for (; b < row_blocks; ++b) sum += partial[b * C + c];
  dweight[c] += sum;
}

int64_t rows_of(const TensorView& x, const char* op) {
  MEMENTO_EXPECT(x.ndim() >= 1, ShapeError, op, ": x must have a channel dimension, got ",
                 x.shape().str());
  const int64_t C = x.size(-1);
  return C == 0 ? 0 : x.numel() / C;
}

}  // namespace

int64_t rmsnorm_backward_partial_rows(int64_t rows) { return std::min(rows, kWeightRowBlocks); }

template <typename T>
void launch_rmsnorm_forward(T* x, const T* residual, const float* weight, float eps, T* y,
                            float* rstd, int64_t rows, int64_t C, cudaStream_t stream) {
  if (rows == 0 || C == 0) return;
  constexpr int kN = kVectorWidth<T>;  // 8 bf16 or 4 f32: one 16-byte word of x
  const unsigned blocks = static_cast<unsigned>((rows + kRowsPerBlock - 1) / kRowsPerBlock);
  if (C % kN == 0 && vector_aligned(x) && vector_aligned(y) && vector_aligned(weight) &&
      (residual == nullptr || vector_aligned(residual)))
    rmsnorm_forward_warp_per_row<T, kN>
        <<<blocks, kThreads, 0, stream>>>(x, residual, weight, eps, y, rstd, rows, C);
  else
    rmsnorm_forward_warp_per_row<T, 1>
        <<<blocks, kThreads, 0, stream>>>(x, residual, weight, eps, y, rstd, rows, C);
  CUDA_CHECK_LAUNCH();
}

template <typename T>
void launch_rmsnorm_backward(const T* dy, const T* x, const float* weight, const float* rstd,
                             const T* residual, T* dx, float* dweight, float* partial, int64_t rows,
                             int64_t C, cudaStream_t stream) {
  if (rows == 0 || C == 0) return;
  constexpr int kN = kVectorWidth<T>;  // 8 bf16 or 4 f32: one 16-byte word of dy or x
  const bool packed_rows = C % kN == 0 && vector_aligned(dy) && vector_aligned(x);
  const unsigned row_tiles = static_cast<unsigned>((rows + kRowsPerBlock - 1) / kRowsPerBlock);
  if (packed_rows && vector_aligned(dx) && vector_aligned(weight) &&
      (residual == nullptr || vector_aligned(residual)))
    rmsnorm_backward_dx_warp_per_row<T, kN>
        <<<row_tiles, kThreads, 0, stream>>>(dy, x, weight, rstd, residual, dx, rows, C);
  else
    rmsnorm_backward_dx_warp_per_row<T, 1>
        <<<row_tiles, kThreads, 0, stream>>>(dy, x, weight, rstd, residual, dx, rows, C);
  CUDA_CHECK_LAUNCH();
  const int64_t row_blocks = rmsnorm_backward_partial_rows(rows);
  const auto partial_grid = [&](int64_t pack) {
    const int64_t packs = C / pack;
    return dim3(static_cast<unsigned>((packs + kPackThreads - 1) / kPackThreads),
                static_cast<unsigned>(row_blocks));
  };
  if (packed_rows && vector_aligned(partial))
    rmsnorm_backward_dweight_row_block_partials<T, kN>
        <<<partial_grid(kN), kPackThreads, 0, stream>>>(dy, x, rstd, partial, rows, C, row_blocks);
  else
    rmsnorm_backward_dweight_row_block_partials<T, 1>
        <<<partial_grid(1), kPackThreads, 0, stream>>>(dy, x, rstd, partial, rows, C, row_blocks);
  CUDA_CHECK_LAUNCH();
  const auto column_tiles = static_cast<unsigned>((C + kColumnsPerBlock - 1) / kColumnsPerBlock);
  rmsnorm_backward_dweight_sum_partials<<<column_tiles, kColumnsPerBlock, 0, stream>>>(
      partial, dweight, C, row_blocks);
  CUDA_CHECK_LAUNCH();
}

template void launch_rmsnorm_forward<float>(float*, const float*, const float*, float, float*,
                                            float*, int64_t, int64_t, cudaStream_t);
template void launch_rmsnorm_forward<__nv_bfloat16>(__nv_bfloat16*, const __nv_bfloat16*,
                                                    const float*, float, __nv_bfloat16*, float*,
                                                    int64_t, int64_t, cudaStream_t);
template void launch_rmsnorm_backward<float>(const float*, const float*, const float*, const float*,
                                             const float*, float*, float*, float*, int64_t, int64_t,
                                             cudaStream_t);
template void launch_rmsnorm_backward<__nv_bfloat16>(const __nv_bfloat16*, const __nv_bfloat16*,
                                                     const float*, const float*,
                                                     const __nv_bfloat16*, __nv_bfloat16*, float*,
                                                     float*, int64_t, int64_t, cudaStream_t);

void rmsnorm_forward(const TensorView& x, const TensorView& weight, double eps, const TensorView& y,
                     const TensorView& rstd, const TensorView* residual, cudaStream_t stream) {
  const char* op = "cuda::rmsnorm_forward";
  const int64_t rows = rows_of(x, op);
  const int64_t C = x.size(-1);
  memento::cuda::detail::expect_cuda({x, weight, y, rstd}, op);
  expect_shape(weight, Shape{C}, "cuda::rmsnorm_forward: weight");
  expect_shape(y, x.shape(), "cuda::rmsnorm_forward: y");
  expect_shape(rstd, Shape{rows}, "cuda::rmsnorm_forward: rstd");
  expect_dtype(weight, DType::kF32, "cuda::rmsnorm_forward: weight");
  expect_dtype(y, x.dtype(), "cuda::rmsnorm_forward: y");
  expect_dtype(rstd, DType::kF32, "cuda::rmsnorm_forward: rstd");
  if (residual) {
    memento::cuda::detail::expect_cuda({*residual}, op);
    expect_shape(*residual, x.shape(), "cuda::rmsnorm_forward: residual");
    expect_dtype(*residual, x.dtype(), "cuda::rmsnorm_forward: residual");
    MEMENTO_CHECK(residual->raw() != x.raw() && residual->raw() != y.raw(),
                  "cuda::rmsnorm_forward: residual aliases x or y");
  }
  memento::cuda::detail::dispatch_activation(x.dtype(), op, "x", [&](auto zero) {
    using T = decltype(zero);
    launch_rmsnorm_forward(
        static_cast<T*>(x.raw()), residual ? static_cast<const T*>(residual->raw()) : nullptr,
        static_cast<const float*>(weight.raw()), static_cast<float>(eps), static_cast<T*>(y.raw()),
        static_cast<float*>(rstd.raw()), rows, C, stream);
  });
}

void rmsnorm_backward(const TensorView& dy, const TensorView& x, const TensorView& weight,
                      const TensorView& rstd, const TensorView& dx, const TensorView& dweight,
                      const TensorView* residual, cudaStream_t stream) {
  const char* op = "cuda::rmsnorm_backward";
  const int64_t rows = rows_of(x, op);
  const int64_t C = x.size(-1);
  memento::cuda::detail::expect_cuda({dy, x, weight, rstd, dx, dweight}, op);
  expect_shape(dy, x.shape(), "cuda::rmsnorm_backward: dy");
  expect_shape(dx, x.shape(), "cuda::rmsnorm_backward: dx");
  expect_shape(weight, Shape{C}, "cuda::rmsnorm_backward: weight");
  expect_shape(dweight, Shape{C}, "cuda::rmsnorm_backward: dweight");
  expect_shape(rstd, Shape{rows}, "cuda::rmsnorm_backward: rstd");
  expect_dtype(dy, x.dtype(), "cuda::rmsnorm_backward: dy");
  expect_dtype(dx, x.dtype(), "cuda::rmsnorm_backward: dx");
  expect_dtype(weight, DType::kF32, "cuda::rmsnorm_backward: weight");
  expect_dtype(dweight, DType::kF32, "cuda::rmsnorm_backward: dweight");
  expect_dtype(rstd, DType::kF32, "cuda::rmsnorm_backward: rstd");
  if (residual) {
    memento::cuda::detail::expect_cuda({*residual}, op);
    expect_shape(*residual, x.shape(), "cuda::rmsnorm_backward: residual");
    expect_dtype(*residual, x.dtype(), "cuda::rmsnorm_backward: residual");
    MEMENTO_CHECK(residual->raw() != dx.raw(), "cuda::rmsnorm_backward: residual aliases dx");
  }
  if (rows == 0 || C == 0) return;
  const Tensor partial = Tensor::empty(Shape{rmsnorm_backward_partial_rows(rows), C}, DType::kF32,
                                       x.device());  // (row blocks, C)
  memento::cuda::detail::dispatch_activation(x.dtype(), op, "x", [&](auto zero) {
    using T = decltype(zero);
    launch_rmsnorm_backward(
        static_cast<const T*>(dy.raw()), static_cast<const T*>(x.raw()),
        static_cast<const float*>(weight.raw()), static_cast<const float*>(rstd.raw()),
        residual ? static_cast<const T*>(residual->raw()) : nullptr, static_cast<T*>(dx.raw()),
        static_cast<float*>(dweight.raw()), partial.data<float>(), rows, C, stream);
  });
}

}  // namespace memento::ops::cuda
