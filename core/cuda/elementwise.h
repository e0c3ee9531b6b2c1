// Elementwise ops and reductions on CUDA tensors: the GPU twins of core/ops/elementwise.h, plus
// the f32 <-> bf16 conversion between device buffers. Tensors are f32 or bf16; the math is fp32.
// Kernels use grid-stride loops with 16-byte loads where every pointer is 16-byte aligned and a
// scalar tail; reductions are deterministic (fixed grid, fixed summation order).
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "core/tensor.h"

namespace memento::ops::cuda {

// acc += x. acc and x: the same shape and dtype (f32|bf16), on the same GPU.
void add_(const TensorView& acc, const TensorView& x, cudaStream_t stream = nullptr);

// x *= alpha (alpha rounded to fp32). x f32|bf16.
void scale_(const TensorView& x, double alpha, cudaStream_t stream = nullptr);

// Sum of x^2: fp32 within 8-element packs, fp64 per thread, across threads and blocks, in a
// fixed order (bit-identical run to run for a given numel and 16-byte alignment of x, whatever
// the GPU model). Synchronises `stream` and returns the sum on the host. x f32|bf16; 0 if empty.
double sum_of_squares(const TensorView& x, cudaStream_t stream = nullptr);

// dst = src converted to dst's dtype (f32 -> bf16 rounds to nearest even; bf16 -> f32 is exact;
// the same dtype is a device-to-device copy). src and dst: the same shape, f32|bf16, the same
// GPU. Asynchronous on `stream`.
void convert(const TensorView& src, const TensorView& dst, cudaStream_t stream = nullptr);

// Launchers on raw device pointers (T = float or __nv_bfloat16; launch_convert: S != D) of n
// elements; they pick the vectorised path when every pointer is 16-byte aligned and check the
// launch.
template <typename T>
void launch_add(T* acc, const T* x, int64_t n, cudaStream_t stream);
template <typename T>
void launch_scale(T* x, float alpha, int64_t n, cudaStream_t stream);
// partial: sum_of_squares_partial_count(n) doubles of scratch; out: one double on the device.
template <typename T>
void launch_sum_of_squares(const T* x, int64_t n, double* partial, double* out,
                           cudaStream_t stream);
int64_t sum_of_squares_partial_count(int64_t n);
template <typename S, typename D>
void launch_convert(const S* src, D* dst, int64_t n, cudaStream_t stream);

}  // namespace memento::ops::cuda
