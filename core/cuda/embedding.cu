#include "core/cuda/embedding.h"

#include <algorithm>
#include <bit>
#include <cstdint>
#include <cub/device/device_radix_sort.cuh>
#include <limits>
#include <vector>

#include "core/cuda/check.h"
#include "core/cuda/kernel_common.cuh"

namespace memento::ops::cuda {
namespace {

using memento::cuda::detail::blocks_for;
using memento::cuda::detail::global_thread;
using memento::cuda::detail::grid_threads;
using memento::cuda::detail::kWarpSize;
using memento::cuda::detail::to_f32;

constexpr int kMaxThreads = 256;
constexpr int kChannelsPerPack = 4;  // the backward's float4 of dweight
// The backward's sorted position of a token whose id is outside [0, V): its row is skipped.
constexpr int32_t kSkipped = -1;
// The sort's arrays in the scratch: keys and positions, current and alternate, N each.
constexpr int kSortArrays = 4;
constexpr size_t kScratchAlignment = 256;  // CUB's alignment of its temporary storage

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

// The backward's input pairs, one per token: key tokens[n], value n. An id outside [0, V) (the
// forward checked the ids, so only a broken caller gets here) becomes key 0 with position
// kSkipped: every key stays inside the sorted bits, so no stray id can split another id's run.
__global__ void embedding_backward_sort_pairs(const int32_t* __restrict__ tokens,
                                              uint32_t* __restrict__ ids,
                                              int32_t* __restrict__ positions, int64_t N,
                                              int64_t V) {
  for (int64_t n = global_thread(); n < N; n += grid_threads()) {
    const int32_t id = tokens[n];
    const bool valid = 0 <= id && id < V;
    ids[n] = valid ? static_cast<uint32_t>(id) : 0u;
    positions[n] = valid ? static_cast<int32_t>(n) : kSkipped;
  }
}

// One past the last index of the run of ids equal to ids[begin], in ids sorted ascending: gallop
// forward, then bisect, so a run of length L costs O(log L) loads (one for the common L = 1).
__device__ __forceinline__ int32_t run_end(const uint32_t* __restrict__ ids, int32_t begin,
                                           int32_t N) {
  const uint32_t id = ids[begin];
  int64_t lo = begin;  // ids[lo] == id
  int64_t hi = begin + 1;
  for (int64_t step = 1; hi < N && ids[hi] == id; step *= 2) {
    lo = hi;
    hi = lo + step;
  }
  if (hi > N) hi = N;  // now hi == N or ids[hi] != id
  while (hi - lo > 1) {
    const int64_t mid = lo + (hi - lo) / 2;
    if (ids[mid] == id)
      lo = mid;
    else
      hi = mid;
  }
  return static_cast<int32_t>(hi);
}

// Block i looks at sorted pair i and works only where a run of equal ids begins, so each id's
// gradient row has exactly one owner. Each thread holds some of the row's channels in fp32
// registers, starting from dweight, adds the dout rows of the run's positions in order (ascending
// (b, t): the sort is stable) and writes once. No two blocks share a row and the order is fixed:
// deterministic, and the same additions in the same order as the CPU op.
template <typename T, bool kPacked>
__global__ void embedding_backward_block_per_run(const uint32_t* __restrict__ sorted_ids,
                                                 const int32_t* __restrict__ positions, int32_t N,
                                                 const T* __restrict__ dout,
                                                 float* __restrict__ dweight, int64_t C) {
  const auto begin = static_cast<int32_t>(blockIdx.x);
  const uint32_t id = sorted_ids[begin];
  if (begin > 0 && sorted_ids[begin - 1] == id) return;  // inside a run another block owns
  const int32_t end = run_end(sorted_ids, begin, N);
  float* dw = dweight + static_cast<int64_t>(id) * C;  // (C)
  if constexpr (kPacked) {
    const int64_t packs = C / kChannelsPerPack;
    for (int64_t j = threadIdx.x; j < packs; j += blockDim.x) {
      const int64_t c = j * kChannelsPerPack;
      float4 acc = reinterpret_cast<const float4*>(dw)[j];
      // Unrolled, the loads of several positions are in flight at once (a frequent id's sum is
      // serial); the additions stay in order.
#pragma unroll 8
      for (int32_t i = begin; i < end; ++i) {
        const int32_t p = positions[i];
        if (p == kSkipped) continue;
        const float4 d = load4(dout + static_cast<int64_t>(p) * C + c);
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
      for (int32_t i = begin; i < end; ++i) {
        const int32_t p = positions[i];
        if (p == kSkipped) continue;
        acc += to_f32(dout[static_cast<int64_t>(p) * C + c]);
      }
      dw[c] = acc;
    }
  }
}

// Bytes from one of the sort's arrays (N int32) to the next in the scratch: each starts 256-byte
// aligned, as do CUB's temporaries after them.
size_t sort_array_stride(int64_t N) {
  const size_t bytes = static_cast<size_t>(N) * sizeof(int32_t);
  return (bytes + kScratchAlignment - 1) / kScratchAlignment * kScratchAlignment;
}
// The scratch's first bytes: the sort's keys and positions, current and alternate.
size_t sort_arrays_bytes(int64_t N) { return kSortArrays * sort_array_stride(N); }

// The sort looks at key bits [0, bit_width(V - 1)) only: 2 radix passes of 8 bits for V = 32000
// or 65536 instead of 4 for all 32 bits. V >= 1.
int sort_end_bit(int64_t V) { return std::bit_width(static_cast<uint32_t>(V - 1)); }

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

size_t embedding_backward_scratch_bytes(int64_t N, int64_t V) {
  if (N == 0 || V == 0) return 0;
  // CUB's two-call protocol: a null temporary storage asks for its size (no work, no stream use).
  cub::DoubleBuffer<uint32_t> ids(nullptr, nullptr);
  cub::DoubleBuffer<int32_t> positions(nullptr, nullptr);
  size_t sort_bytes = 0;
  CUDA_CHECK(cub::DeviceRadixSort::SortPairs(nullptr, sort_bytes, ids, positions,
                                             static_cast<int32_t>(N), 0, sort_end_bit(V)));
  return sort_arrays_bytes(N) + sort_bytes;
}

template <typename T>
void launch_embedding_backward(const int32_t* tokens, const T* dout, float* dweight, int64_t N,
                               int64_t V, int64_t C, void* scratch, size_t scratch_bytes,
                               cudaStream_t stream) {
  if (N == 0 || V == 0 || C == 0) return;
  MEMENTO_CHECK(scratch != nullptr && scratch_bytes > sort_arrays_bytes(N),
                "embedding backward: ", scratch_bytes, " bytes of scratch for N = ", N);
  // (N) each: keys, positions, and their alternates; then CUB's temporary storage.
  char* bytes = static_cast<char*>(scratch);
  const size_t stride = sort_array_stride(N);
  auto* keys = reinterpret_cast<uint32_t*>(bytes);
  auto* positions = reinterpret_cast<int32_t*>(bytes + stride);
  auto* alternate_keys = reinterpret_cast<uint32_t*>(bytes + 2 * stride);
  auto* alternate_positions = reinterpret_cast<int32_t*>(bytes + 3 * stride);
  void* sort_temp = bytes + sort_arrays_bytes(N);
  size_t sort_bytes = scratch_bytes - sort_arrays_bytes(N);

  embedding_backward_sort_pairs<<<blocks_for(N, kMaxThreads), kMaxThreads, 0, stream>>>(
      tokens, keys, positions, N, V);
  CUDA_CHECK_LAUNCH();
  // The DoubleBuffer form sorts between our two pairs of arrays (no copies of them inside CUB's
  // temporary storage) and says on the host which of the two holds the result.
  cub::DoubleBuffer<uint32_t> sorted_ids(keys, alternate_keys);
  cub::DoubleBuffer<int32_t> sorted_positions(positions, alternate_positions);
  CUDA_CHECK(cub::DeviceRadixSort::SortPairs(sort_temp, sort_bytes, sorted_ids, sorted_positions,
                                             static_cast<int32_t>(N), 0, sort_end_bit(V), stream));

  // Rows stay aligned when C is a multiple of the pack, so the bases decide for every row.
  const bool packed = C % kChannelsPerPack == 0 && aligned(dweight, sizeof(float4)) &&
                      aligned(dout, kChannelsPerPack * sizeof(T));
  const auto blocks = static_cast<unsigned>(N);
  const auto rows = static_cast<int32_t>(N);
  if (packed) {
    embedding_backward_block_per_run<T, true>
        <<<blocks, threads_for(C / kChannelsPerPack), 0, stream>>>(
            sorted_ids.Current(), sorted_positions.Current(), rows, dout, dweight, C);
  } else {
    embedding_backward_block_per_run<T, false><<<blocks, threads_for(C), 0, stream>>>(
        sorted_ids.Current(), sorted_positions.Current(), rows, dout, dweight, C);
  }
  CUDA_CHECK_LAUNCH();
}

template void launch_embedding_forward<float>(const int32_t*, const float*, float*, int64_t,
                                              int64_t, cudaStream_t);
template void launch_embedding_forward<__nv_bfloat16>(const int32_t*, const __nv_bfloat16*,
                                                      __nv_bfloat16*, int64_t, int64_t,
                                                      cudaStream_t);
template void launch_embedding_backward<float>(const int32_t*, const float*, float*, int64_t,
                                               int64_t, int64_t, void*, size_t, cudaStream_t);
template void launch_embedding_backward<__nv_bfloat16>(const int32_t*, const __nv_bfloat16*, float*,
                                                       int64_t, int64_t, int64_t, void*, size_t,
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
  // No check of the ids here, and no wait: the backward trusts the ids embedding_forward checked
  // at the start of the step (an id outside [0, V) is skipped, never written).
  const int64_t N = tokens.numel();
  if (N == 0 || V == 0 || C == 0) return;
  // Scratch: the sort's keys and positions, in and out, 4 * N * 4 bytes (each array rounded up to
  // 256 bytes), plus CUB's temporary storage, its histograms and look-back: on SM90 1 KiB per
  // radix pass and per tile of 8832 pairs, plus 0.5 KiB (1 byte up to 4864 pairs, one tile). For
  // B * T = 16384 and V = 32000: 262144 + 4607 bytes. It goes back to the pool when this returns:
  // the pool frees on the legacy default stream, after the work queued here on `stream` (a
  // blocking stream).
  const size_t scratch_bytes = embedding_backward_scratch_bytes(N, V);
  const auto scratch_words =
      static_cast<int64_t>((scratch_bytes + sizeof(int32_t) - 1) / sizeof(int32_t));
  const Tensor scratch = Tensor::empty(Shape{scratch_words}, DType::kI32, dweight.device());
  memento::cuda::detail::dispatch_activation(dout.dtype(), op, "dout", [&](auto zero) {
    using T = decltype(zero);
    launch_embedding_backward(static_cast<const int32_t*>(tokens.raw()),
                              static_cast<const T*>(dout.raw()), static_cast<float*>(dweight.raw()),
                              N, V, C, scratch.data<int32_t>(), scratch_bytes, stream);
  });
}

}  // namespace memento::ops::cuda
