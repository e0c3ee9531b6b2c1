#include "core/ops/embedding.h"

#include <algorithm>
#include <cstring>

#include "core/ops/cpu_common.h"
#include "core/ops/dispatch.h"
#ifdef MEMENTO_WITH_CUDA
#include "core/cuda/embedding.h"
#endif

namespace memento::ops {
namespace {

using detail::any_meta;
using detail::dispatch_float;

// Channels per task of the scatter-add; a multiple of a cache line in fp32 and fp64, so tasks
// never share a line of the gradient.
constexpr int64_t kChannelTile = 64;

void check_shapes(const char* op, const TensorView& tokens, const TensorView& table,
                  const TensorView& rows, const char* table_name, const char* rows_name) {
  MEMENTO_EXPECT(tokens.ndim() == 2, ShapeError, op, ": tokens: expected (B, T), got ",
                 tokens.shape().str());
  expect_dtype(tokens, DType::kI32, ::memento::detail::concat(op, ": tokens").c_str());
  MEMENTO_EXPECT(table.ndim() == 2, ShapeError, op, ": ", table_name, ": expected (V, C), got ",
                 table.shape().str());
  const Shape expected{tokens.size(0), tokens.size(1), table.size(1)};
  expect_shape(rows, expected, ::memento::detail::concat(op, ": ", rows_name).c_str());
  expect_dtype(rows, table.dtype(), ::memento::detail::concat(op, ": ", rows_name).c_str());
}

// Serial, before any threads start: an exception cannot leave an OpenMP region.
void check_ids(const TensorView& tokens, int64_t V) {
  if (tokens.is_meta()) return;
  const int32_t* ids = tokens.data<int32_t>();
  const int64_t T = tokens.size(1);
  for (int64_t i = 0; i < tokens.numel(); ++i) {
    MEMENTO_EXPECT(0 <= ids[i] && ids[i] < V, DataError, "embedding: token id ", ids[i],
                   " at (b, t) = (", i / T, ", ", i % T, ") is outside the vocabulary [0, ", V,
                   ")");
  }
}

}  // namespace

void embedding_forward(const TensorView& tokens, const TensorView& weight, const TensorView& out) {
  MEMENTO_CUDA_DISPATCH(weight, cuda::embedding_forward(tokens, weight, out));
  check_shapes("embedding_forward", tokens, weight, out, "weight", "out");
  check_ids(tokens, weight.size(0));
  dispatch_float(weight.dtype(), "embedding_forward", "weight", [&](auto zero) {
    using T = decltype(zero);
    if (any_meta({tokens, weight, out})) return;
    const int32_t* ids = tokens.data<int32_t>();  // (B, T)
    const T* w = weight.data<T>();                // (V, C)
    T* o = out.data<T>();                         // (B, T, C)
    const int64_t N = tokens.numel(), C = weight.size(1);
#pragma omp parallel for schedule(static)
    for (int64_t n = 0; n < N; ++n)
      std::memcpy(o + n * C, w + static_cast<int64_t>(ids[n]) * C, sizeof(T) * C);
  });
}

void embedding_backward(const TensorView& tokens, const TensorView& dout,
                        const TensorView& dweight) {
  MEMENTO_CUDA_DISPATCH(dout, cuda::embedding_backward(tokens, dout, dweight));
  check_shapes("embedding_backward", tokens, dweight, dout, "dweight", "dout");
  check_ids(tokens, dweight.size(0));
  dispatch_float(dweight.dtype(), "embedding_backward", "dweight", [&](auto zero) {
    using T = decltype(zero);
    if (any_meta({tokens, dout, dweight})) return;
    const int32_t* ids = tokens.data<int32_t>();  // (B, T)
    const T* d = dout.data<T>();                  // (B, T, C)
    T* dw = dweight.data<T>();                    // (V, C)
    const int64_t N = tokens.numel(), C = dweight.size(1);
    const int64_t tiles = (C + kChannelTile - 1) / kChannelTile;
    // Parallel over channels, not tokens: repeated ids never race and the sum order is fixed.
#pragma omp parallel for schedule(static)
    for (int64_t tile = 0; tile < tiles; ++tile) {
      const int64_t c0 = tile * kChannelTile;
      const int64_t width = std::min(kChannelTile, C - c0);
      for (int64_t n = 0; n < N; ++n) {
        T* dst = dw + static_cast<int64_t>(ids[n]) * C + c0;
        const T* src = d + n * C + c0;
        for (int64_t c = 0; c < width; ++c) dst[c] += src[c];
      }
    }
  });
}

}  // namespace memento::ops
