// GEMM on CPU tensors through BLAS (OpenBLAS): sgemm for fp32, dgemm for fp64.
#pragma once

#include <cstdint>

#include "core/tensor.h"

namespace memento::ops {

// c = alpha * op(a) * op(b) + beta * c, where each tensor is read as a row-major matrix whose
// columns are its last dimension ((B, T, C) is (B*T, C)); op(x) is x or x^T. Shapes are checked:
// op(a) (M, K), op(b) (K, N), c (M, N). beta = 1 accumulates, which is how weight gradients add up.
void matmul(const TensorView& a, bool transpose_a, const TensorView& b, bool transpose_b,
            const TensorView& c, double alpha = 1.0, double beta = 0.0);

// The GEMM rate this machine sustains on `device`, in FLOP/s: bf16 on a GPU (an 8192^3 problem),
// fp32 on the CPU (the best of 8 short trials, so that another process busy for a moment does not
// lower it). The trainer's ceiling for MFU.
double measure_gemm_peak_flops(Device device);

// Time and floating-point operations spent in matmul since the last reset, summed over calls.
struct GemmStats {
  double seconds = 0;
  double flops = 0;
  int64_t calls = 0;
};
GemmStats gemm_stats();
void reset_gemm_stats();

}  // namespace memento::ops
