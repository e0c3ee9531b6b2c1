#include "core/ops/matmul.h"

#include <cblas.h>

#include <algorithm>
#include <atomic>
#include <chrono>

#include "core/device.h"
#include "core/ops/dispatch.h"
#ifdef MEMENTO_WITH_CUDA
#include "core/cuda/gemm.h"
#endif

namespace memento::ops {
namespace {
std::atomic<int64_t> g_gemm_nanos{0};
std::atomic<int64_t> g_gemm_calls{0};
std::atomic<double> g_gemm_flops{0};

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}
using Clock = std::chrono::steady_clock;

struct Matrix {
  int64_t rows, cols;
};
Matrix as_matrix(const TensorView& t) {
  const int64_t cols = t.ndim() == 0 ? 1 : t.size(-1);
  return {cols == 0 ? 0 : t.numel() / cols, cols};
}
}  // namespace

void matmul(const TensorView& a, bool transpose_a, const TensorView& b, bool transpose_b,
            const TensorView& c, double alpha, double beta) {
  MEMENTO_CUDA_DISPATCH(a, cuda::matmul(a, transpose_a, b, transpose_b, c, alpha, beta));
  const Matrix ma = as_matrix(a), mb = as_matrix(b), mc = as_matrix(c);
  const int64_t M = transpose_a ? ma.cols : ma.rows;
  const int64_t K = transpose_a ? ma.rows : ma.cols;
  const int64_t Kb = transpose_b ? mb.cols : mb.rows;
  const int64_t N = transpose_b ? mb.rows : mb.cols;
  MEMENTO_EXPECT(K == Kb && mc.rows == M && mc.cols == N, ShapeError, "matmul: op(a) ",
                 a.shape().str(), (transpose_a ? "^T" : ""), " x op(b) ", b.shape().str(),
                 (transpose_b ? "^T" : ""), " -> c ", c.shape().str(), ": expected c (", M, ", ", N,
                 ") and inner dims ", K, " == ", Kb);
  MEMENTO_EXPECT(a.dtype() == b.dtype() && a.dtype() == c.dtype(), ShapeError,
                 "matmul: dtypes differ: ", dtype_name(a.dtype()), ", ", dtype_name(b.dtype()),
                 ", ", dtype_name(c.dtype()));
  if (c.is_meta() || M == 0 || N == 0) return;
  const auto start = std::chrono::steady_clock::now();
  const CBLAS_TRANSPOSE ta = transpose_a ? CblasTrans : CblasNoTrans;
  const CBLAS_TRANSPOSE tb = transpose_b ? CblasTrans : CblasNoTrans;
  if (a.dtype() == DType::kF32) {
    cblas_sgemm(CblasRowMajor, ta, tb, M, N, K, static_cast<float>(alpha), a.data<float>(), ma.cols,
                b.data<float>(), mb.cols, static_cast<float>(beta), c.data<float>(), N);
  } else if (a.dtype() == DType::kF64) {
    cblas_dgemm(CblasRowMajor, ta, tb, M, N, K, alpha, a.data<double>(), ma.cols, b.data<double>(),
                mb.cols, beta, c.data<double>(), N);
  } else {
    throw ShapeError(
        detail::concat("matmul: the CPU backend takes f32 or f64, got ", dtype_name(a.dtype())));
  }
  const auto nanos =
      std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - start)
          .count();
  g_gemm_nanos += nanos;
  g_gemm_calls += 1;
  g_gemm_flops += 2.0 * static_cast<double>(M) * static_cast<double>(N) * static_cast<double>(K);
}

double measure_gemm_peak_flops(Device device) {
  if (!device.is_cpu()) {
    // The bf16 GEMM rate of this GPU on a large square problem, with data that is not all zeros.
    constexpr int64_t kN = 8192;
    constexpr int kRepeats = 10;
    // The values (multiples of 1/16 in [-1/2, 1/2], exact in bf16) are made on the host in bf16
    // and pinned memory: one 128 MiB transient outside the run's CPU budget, one copy.
    const Tensor host =
        Tensor::empty(Shape{kN, kN}, DType::kBF16, Device::cpu(), pinned_host_memory());
    auto* h = static_cast<uint16_t*>(host.view().raw());
    for (int64_t i = 0; i < kN * kN; ++i)
      h[i] = float_to_bf16(static_cast<float>((i * 7919) % 17 - 8) / 16.0f);
    const Tensor a = Tensor::empty(Shape{kN, kN}, DType::kBF16, device);
    const Tensor c = Tensor::empty(Shape{kN, kN}, DType::kBF16, device);
    copy(host, a);
    ops::matmul(a, false, a, true, c);  // warm-up (and algorithm choice)
    synchronize(device);
    const auto start = Clock::now();
    for (int i = 0; i < kRepeats; ++i) ops::matmul(a, false, a, true, c);
    synchronize(device);
    return kRepeats * 2.0 * static_cast<double>(kN * kN * kN) / seconds_since(start);
  }
  // The fp32 GEMM rate this machine sustains: the realistic ceiling for MFU on the CPU. The best
  // of several short trials, so that another process busy for a moment does not lower it.
  constexpr int64_t kN = 512;
  constexpr int kRepeats = 2;
  constexpr int kTrials = 8;
  const Tensor a = Tensor::zeros(Shape{kN, kN}, DType::kF32);
  const Tensor c = Tensor::zeros(Shape{kN, kN}, DType::kF32);
  ops::matmul(a, false, a, true, c);  // warm-up
  double best = 0;
  for (int trial = 0; trial < kTrials; ++trial) {
    const auto start = Clock::now();
    for (int i = 0; i < kRepeats; ++i) ops::matmul(a, false, a, true, c);
    best = std::max(best, kRepeats * 2.0 * kN * kN * kN / seconds_since(start));
  }
  return best;
}

GemmStats gemm_stats() {
  return {static_cast<double>(g_gemm_nanos.load()) * 1e-9, g_gemm_flops.load(),
          g_gemm_calls.load()};
}

void reset_gemm_stats() {
  g_gemm_nanos = 0;
  g_gemm_calls = 0;
  g_gemm_flops = 0;
}

}  // namespace memento::ops
