#include "core/cuda/embedding.h"

#include <algorithm>
#include <cstdint>
#include <limits>
#include <vector>

#include "core/cuda/check.h"
#include "core/cuda/kernel_common.cuh"

namespace memento::ops::cuda {
namespace {

using memento::cuda::detail::kWarpSize;
using memento::cuda::detail::to_f32;

constexpr int kMaxThreads = 256;
constexpr int kChannelsPerPack = 4;  // the backward's float4 of dweight

// Threads for `units` independent pieces of a row: whole warps, at most kMaxThreads.
int threads_for(int64_t units) {
  const int64_t warps = (units + kWarpSize - 1) / kWarpSize;
  return static_cast<int>(std::clamp<int64_t>(warps * kWarpSize, kWarpSize, kMaxThreads));
}

bool aligned(const void* p, size_t bytes) { return reinterpret_cast<uintptr_t>(p) % bytes == 0; }

// Block n copies weight row tokens[n] to out row n in words W (the widest of 16, 8, 4 or 2 bytes
// that divides the row and both base addresses): a plain gather, coalesced on both sides.
template <typename W>
__global__ void embedding_forward_block_per_row(const int32_t* __restrict__ tokens,
                                                const W* __restrict__ weight, W* __restrict__ out,
                                                int64_t words_per_row) {
  const int64_t n = blockIdx.x;
  const W* src = weight + static_cast<int64_t>(tokens[n]) * words_per_row;  // (C)
  W* dst = out + n * words_per_row;                                         // (C)
  for (int64_t w = threadIdx.x; w < words_per_row; w += blockDim.x) dst[w] = src[w];
}

// Four consecutive elements in fp32 from one 16-byte (fp32) or 8-byte (bf16) load.
__device__ __forceinline__ float4 load4(const float* p) {
  return *reinterpret_cast<const float4*>(p);
}
__device__ __forceinline__ float4 load4(const __nv_bfloat16* p) {
  const uint2 raw = *reinterpret_cast<const uint2*>(p);
  // bf16 is the top half of an fp32: widening is a shift (element 0 sits in the low bits).
  return make_float4(__uint_as_float(raw.x << 16), __uint_as_float(raw.x & 0xffff0000u),
                     __uint_as_float(raw.y << 16), __uint_as_float(raw.y & 0xffff0000u));
}

// Block k owns the gradient row of id segment_id[k]: each thread holds some of its channels in
// fp32 registers, starting from dweight, adds dout at the id's positions in ascending (b, t)
// order and writes once. No two blocks share a row and the order is fixed: deterministic, and the
// same additions in the same order as the CPU op.
template <typename T, bool kPacked>
__global__ void embedding_backward_block_per_id(const int32_t* __restrict__ segment_begin,
                                                const int32_t* __restrict__ segment_id,
                                                const int32_t* __restrict__ positions,
                                                const T* __restrict__ dout,
                                                float* __restrict__ dweight, int64_t C) {
  const int64_t k = blockIdx.x;
  const int32_t begin = segment_begin[k];
  const int32_t end = segment_begin[k + 1];
  float* dw = dweight + static_cast<int64_t>(segment_id[k]) * C;  // (C)
  if constexpr (kPacked) {
    const int64_t packs = C / kChannelsPerPack;
    for (int64_t j = threadIdx.x; j < packs; j += blockDim.x) {
      const int64_t c = j * kChannelsPerPack;
      float4 acc = reinterpret_cast<const float4*>(dw)[j];
      // Unrolled, the loads of several positions are in flight at once (a frequent id's sum is
      // serial); the additions stay in order.
#pragma unroll 8
      for (int32_t p = begin; p < end; ++p) {
        const float4 d = load4(dout + static_cast<int64_t>(positions[p]) * C + c);
        acc.x += d.x;
        acc.y += d.y;
        acc.z += d.z;
        acc.w += d.w;
      }
      reinterpret_cast<float4*>(dw)[j] = acc;
    }
  } else {
    for (int64_t c = threadIdx.x; c < C; c += blockDim.x) {
      float acc = dw[c];
#pragma unroll 8
      for (int32_t p = begin; p < end; ++p)
        acc += to_f32(dout[static_cast<int64_t>(positions[p]) * C + c]);
      dw[c] = acc;
    }
  }
}

template <typename W>
void launch_forward_words(const int32_t* tokens, const void* weight, void* out, int64_t N,
                          int64_t row_bytes, cudaStream_t stream) {
  const int64_t words = row_bytes / static_cast<int64_t>(sizeof(W));
  embedding_forward_block_per_row<W><<<static_cast<unsigned>(N), threads_for(words), 0, stream>>>(
      tokens, static_cast<const W*>(weight), static_cast<W*>(out), words);
  CUDA_CHECK_LAUNCH();
}

void check_shapes(const char* op, const TensorView& tokens, const TensorView& table,
                  const TensorView& rows, const char* table_name, const char* rows_name) {
  using ::memento::detail::concat;
  MEMENTO_EXPECT(tokens.ndim() == 2, ShapeError, op, ": tokens: expected (B, T), got ",
                 tokens.shape().str());
  expect_dtype(tokens, DType::kI32, concat(op, ": tokens").c_str());
  MEMENTO_EXPECT(table.ndim() == 2, ShapeError, op, ": ", table_name, ": expected (V, C), got ",
                 table.shape().str());
  expect_shape(rows, Shape{tokens.size(0), tokens.size(1), table.size(1)},
               concat(op, ": ", rows_name).c_str());
  // Positions and ids are int32 on the device (and block indices of the launches).
  MEMENTO_EXPECT(tokens.numel() <= std::numeric_limits<int32_t>::max() &&
                     table.size(0) <= std::numeric_limits<int32_t>::max(),
                 ShapeError, op, ": B * T = ", tokens.numel(), " and V = ", table.size(0),
                 " must fit in int32");
}

// Dtypes are checked before the ids are copied: a wrong call fails without waiting for the GPU.
void expect_activation(DType dtype, const char* op, const char* tensor) {
  memento::cuda::detail::dispatch_activation(dtype, op, tensor, [](auto) {});
}

// The ids on the host, checked exactly as the CPU op checks them. Waits for the stream.
std::vector<int32_t> host_ids(const TensorView& tokens, int64_t V, cudaStream_t stream) {
  std::vector<int32_t> ids(static_cast<size_t>(tokens.numel()));
  if (ids.empty()) return ids;
  CUDA_CHECK(cudaMemcpyAsync(ids.data(), tokens.raw(), ids.size() * sizeof(int32_t),
                             cudaMemcpyDeviceToHost, stream));
  CUDA_CHECK(cudaStreamSynchronize(stream));
  const int64_t T = tokens.size(1);
  for (size_t i = 0; i < ids.size(); ++i) {
    const auto n = static_cast<int64_t>(i);
    MEMENTO_EXPECT(0 <= ids[i] && ids[i] < V, DataError, "embedding: token id ", ids[i],
                   " at (b, t) = (", n / T, ", ", n % T, ") is outside the vocabulary [0, ", V,
                   ")");
  }
  return ids;
}

// Counting sort of the positions by id: segment_begin (U + 1) | segment_id (U) | positions (N),
// ids ascending, positions ascending within an id (the scatter below is stable).
std::vector<int32_t> group_by_id(const std::vector<int32_t>& ids, int64_t V, int64_t* U) {
  std::vector<int32_t> start(static_cast<size_t>(V) + 1, 0);
  for (const int32_t id : ids) ++start[static_cast<size_t>(id) + 1];
  int64_t distinct = 0;
  for (size_t v = 0; v < static_cast<size_t>(V); ++v) {
    distinct += start[v + 1] > 0 ? 1 : 0;
    start[v + 1] += start[v];
  }
  const size_t N = ids.size();
  std::vector<int32_t> groups(2 * static_cast<size_t>(distinct) + 1 + N);
  int32_t* segment_begin = groups.data();
  int32_t* segment_id = segment_begin + distinct + 1;
  int32_t* positions = segment_id + distinct;
  size_t k = 0;
  for (size_t v = 0; v < static_cast<size_t>(V); ++v) {
    if (start[v + 1] == start[v]) continue;
    segment_begin[k] = start[v];
    segment_id[k] = static_cast<int32_t>(v);
    ++k;
  }
  segment_begin[distinct] = static_cast<int32_t>(N);
  for (size_t n = 0; n < N; ++n)
    positions[start[static_cast<size_t>(ids[n])]++] = static_cast<int32_t>(n);
  *U = distinct;
  return groups;
}

}  // namespace

template <typename T>
void launch_embedding_forward(const int32_t* tokens, const T* weight, T* out, int64_t N, int64_t C,
                              cudaStream_t stream) {
  if (N == 0 || C == 0) return;
  const int64_t row_bytes = C * static_cast<int64_t>(sizeof(T));
  auto fits = [&](int64_t word) {
    return row_bytes % word == 0 && aligned(weight, word) && aligned(out, word);
  };
  if (fits(16))
    launch_forward_words<uint4>(tokens, weight, out, N, row_bytes, stream);
  else if (fits(8))
    launch_forward_words<uint2>(tokens, weight, out, N, row_bytes, stream);
  else if (fits(4))
    launch_forward_words<uint32_t>(tokens, weight, out, N, row_bytes, stream);
  else
    launch_forward_words<uint16_t>(tokens, weight, out, N, row_bytes, stream);
}

template <typename T>
void launch_embedding_backward(const int32_t* groups, int64_t U, const T* dout, float* dweight,
                               int64_t C, cudaStream_t stream) {
  if (U == 0 || C == 0) return;
  const int32_t* segment_begin = groups;
  const int32_t* segment_id = groups + U + 1;
  const int32_t* positions = segment_id + U;
  // Rows stay aligned when C is a multiple of the pack, so the bases decide for every row.
  const bool packed = C % kChannelsPerPack == 0 && aligned(dweight, sizeof(float4)) &&
                      aligned(dout, kChannelsPerPack * sizeof(T));
  if (packed) {
    embedding_backward_block_per_id<T, true>
        <<<static_cast<unsigned>(U), threads_for(C / kChannelsPerPack), 0, stream>>>(
            segment_begin, segment_id, positions, dout, dweight, C);
  } else {
    embedding_backward_block_per_id<T, false>
        <<<static_cast<unsigned>(U), threads_for(C), 0, stream>>>(segment_begin, segment_id,
                                                                  positions, dout, dweight, C);
  }
  CUDA_CHECK_LAUNCH();
}

template void launch_embedding_forward<float>(const int32_t*, const float*, float*, int64_t,
                                              int64_t, cudaStream_t);
template void launch_embedding_forward<__nv_bfloat16>(const int32_t*, const __nv_bfloat16*,
                                                      __nv_bfloat16*, int64_t, int64_t,
                                                      cudaStream_t);
template void launch_embedding_backward<float>(const int32_t*, int64_t, const float*, float*,
                                               int64_t, cudaStream_t);
template void launch_embedding_backward<__nv_bfloat16>(const int32_t*, int64_t,
                                                       const __nv_bfloat16*, float*, int64_t,
                                                       cudaStream_t);

void embedding_forward(const TensorView& tokens, const TensorView& weight, const TensorView& out,
                       cudaStream_t stream) {
  const char* op = "cuda::embedding_forward";
  memento::cuda::detail::expect_cuda({tokens, weight, out}, op);
  check_shapes(op, tokens, weight, out, "weight", "out");
  expect_dtype(out, weight.dtype(), "cuda::embedding_forward: out");
  expect_activation(weight.dtype(), op, "weight");
  const int64_t V = weight.size(0), C = weight.size(1);
  host_ids(tokens, V, stream);
  memento::cuda::detail::dispatch_activation(weight.dtype(), op, "weight", [&](auto zero) {
    using T = decltype(zero);
    launch_embedding_forward(static_cast<const int32_t*>(tokens.raw()),
                             static_cast<const T*>(weight.raw()), static_cast<T*>(out.raw()),
                             tokens.numel(), C, stream);
  });
}

void embedding_backward(const TensorView& tokens, const TensorView& dout, const TensorView& dweight,
                        cudaStream_t stream) {
  const char* op = "cuda::embedding_backward";
  memento::cuda::detail::expect_cuda({tokens, dout, dweight}, op);
  check_shapes(op, tokens, dweight, dout, "dweight", "dout");
  expect_dtype(dweight, DType::kF32, "cuda::embedding_backward: dweight");
  const int64_t V = dweight.size(0), C = dweight.size(1);
  expect_activation(dout.dtype(), op, "dout");
  const std::vector<int32_t> ids = host_ids(tokens, V, stream);
  if (ids.empty() || C == 0) return;
  int64_t U = 0;
  const std::vector<int32_t> groups = group_by_id(ids, V, &U);
  const Tensor device_groups = Tensor::empty(Shape{static_cast<int64_t>(groups.size())},
                                             DType::kI32, dweight.device());  // (2U + 1 + N)
  CUDA_CHECK(cudaMemcpyAsync(device_groups.data<int32_t>(), groups.data(),
                             groups.size() * sizeof(int32_t), cudaMemcpyHostToDevice, stream));
  // `groups` is pageable and dies with this scope: wait for the copy (the stream is idle after
  // host_ids, so this costs the copy alone).
  CUDA_CHECK(cudaStreamSynchronize(stream));
  memento::cuda::detail::dispatch_activation(dout.dtype(), op, "dout", [&](auto zero) {
    using T = decltype(zero);
    launch_embedding_backward(device_groups.data<int32_t>(), U, static_cast<const T*>(dout.raw()),
                              static_cast<float*>(dweight.raw()), C, stream);
  });
}

}  // namespace memento::ops::cuda
