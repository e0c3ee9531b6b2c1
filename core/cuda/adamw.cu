#include "core/cuda/adamw.h"

#include <cmath>

#include "core/cuda/check.h"
#include "core/cuda/kernel_common.cuh"

namespace memento::ops::cuda {
namespace {

constexpr int kThreads = 256;

using memento::cuda::detail::global_thread;
using memento::cuda::detail::grid_threads;
using memento::cuda::detail::load_pack;
using memento::cuda::detail::Pack;
using memento::cuda::detail::store_pack;
using memento::cuda::detail::vector_aligned;

// Elements per vectorised access: two 16-byte words of each fp32 buffer, one of the bf16 copy.
constexpr int kPack = 8;
// 2048 x 256 threads fill an H200's 132 SMs several times over; larger buffers loop.
constexpr int64_t kMaxBlocks = 2048;

// Scalars derived on the host in fp64 and rounded once, exactly as the CPU optimizer does.
struct AdamWScalars {
  float beta1, beta2, step_size, inv_sqrt_bias2, eps, decay, grad_scale;
};

// One element's update: the CPU optimizer's fp32 operations in its order, each rounded on its own
// (the _rn intrinsics are never contracted into fused multiply-adds). Left to itself the compiler
// contracts differently in the vector and the scalar loops, so an element's result would depend
// on its buffer's alignment.
__device__ __forceinline__ void adamw_element(float& p, float g, float& m, float& v,
                                              const AdamWScalars& k) {
  g = __fmul_rn(g, k.grad_scale);
  m = __fadd_rn(__fmul_rn(k.beta1, m), __fmul_rn(1.0f - k.beta1, g));
  v = __fadd_rn(__fmul_rn(k.beta2, v), __fmul_rn(__fmul_rn(1.0f - k.beta2, g), g));
  const float denominator = __fadd_rn(__fmul_rn(__fsqrt_rn(v), k.inv_sqrt_bias2), k.eps);
  p = __fsub_rn(__fmul_rn(p, k.decay), __fdiv_rn(__fmul_rn(k.step_size, m), denominator));
}

// A grid-stride walk over n / kN packs, then the n % kN tail one element at a time (kN == 1:
// every element, for buffers that are not 16-byte aligned).
template <int kN>
__global__ void adamw_flat_elementwise(float* __restrict__ p, const float* __restrict__ g,
                                       float* __restrict__ m, float* __restrict__ v,
                                       __nv_bfloat16* __restrict__ p_bf16, int64_t n,
                                       AdamWScalars k) {
  const int64_t packs = n / kN;
  for (int64_t i = global_thread(); i < packs; i += grid_threads()) {
    Pack<float, kN> pp = load_pack<kN>(p + i * kN);
    const Pack<float, kN> gp = load_pack<kN>(g + i * kN);
    Pack<float, kN> mp = load_pack<kN>(m + i * kN);
    Pack<float, kN> vp = load_pack<kN>(v + i * kN);
#pragma unroll
    for (int j = 0; j < kN; ++j) adamw_element(pp.v[j], gp.v[j], mp.v[j], vp.v[j], k);
    store_pack<kN>(m + i * kN, mp);
    store_pack<kN>(v + i * kN, vp);
    store_pack<kN>(p + i * kN, pp);
    if (p_bf16) {
      Pack<__nv_bfloat16, kN> bp;
#pragma unroll
      for (int j = 0; j < kN; ++j) bp.v[j] = __float2bfloat16_rn(pp.v[j]);
      store_pack<kN>(p_bf16 + i * kN, bp);
    }
  }
  for (int64_t i = packs * kN + global_thread(); i < n; i += grid_threads()) {
    float pi = p[i], mi = m[i], vi = v[i];
    adamw_element(pi, g[i], mi, vi, k);
    m[i] = mi;
    v[i] = vi;
    p[i] = pi;
    if (p_bf16) p_bf16[i] = __float2bfloat16_rn(pi);
  }
}

}  // namespace

void launch_adamw_flat(float* params, const float* grads, float* exp_avg, float* exp_avg_sq,
                       void* params_bf16, int64_t n, const AdamWHyper& h, cudaStream_t stream) {
  if (n == 0) return;
  const double t = static_cast<double>(h.step);
  const double bias1 = 1.0 - std::pow(h.beta1, t);
  const double bias2 = 1.0 - std::pow(h.beta2, t);
  const AdamWScalars k{
      static_cast<float>(h.beta1),      static_cast<float>(h.beta2),
      static_cast<float>(h.lr / bias1), static_cast<float>(1.0 / std::sqrt(bias2)),
      static_cast<float>(h.eps),        static_cast<float>(1.0 - h.lr * h.weight_decay),
      static_cast<float>(h.grad_scale)};
  auto* bf16 = static_cast<__nv_bfloat16*>(params_bf16);
  using memento::cuda::detail::blocks_for;
  if (vector_aligned(params) && vector_aligned(grads) && vector_aligned(exp_avg) &&
      vector_aligned(exp_avg_sq) && (bf16 == nullptr || vector_aligned(bf16)))
    adamw_flat_elementwise<kPack>
        <<<blocks_for(n / kPack, kThreads, kMaxBlocks), kThreads, 0, stream>>>(
            params, grads, exp_avg, exp_avg_sq, bf16, n, k);
  else
    adamw_flat_elementwise<1><<<blocks_for(n, kThreads, kMaxBlocks), kThreads, 0, stream>>>(
        params, grads, exp_avg, exp_avg_sq, bf16, n, k);
  CUDA_CHECK_LAUNCH();
}

void adamw_step(const TensorView& params, const TensorView& grads, const TensorView& exp_avg,
                const TensorView& exp_avg_sq, const TensorView& params_bf16, const AdamWHyper& h,
                cudaStream_t stream) {
  const char* op = "cuda::adamw_step";
  memento::cuda::detail::expect_cuda({params, grads, exp_avg, exp_avg_sq}, op);
  const Shape flat{params.numel()};
  MEMENTO_EXPECT(params.ndim() == 1, ShapeError, op, ": params must be flat, got ",
                 params.shape().str());
  expect_shape(grads, flat, "cuda::adamw_step: grads");
  expect_shape(exp_avg, flat, "cuda::adamw_step: exp_avg");
  expect_shape(exp_avg_sq, flat, "cuda::adamw_step: exp_avg_sq");
  for (const TensorView* t : {&params, &grads, &exp_avg, &exp_avg_sq})
    expect_dtype(*t, DType::kF32, "cuda::adamw_step: params, grads, exp_avg, exp_avg_sq");
  MEMENTO_EXPECT(h.step >= 1, ShapeError, op, ": step counts from 1, got ", h.step);
  void* bf16 = params_bf16.raw();
  if (bf16) {
    memento::cuda::detail::expect_cuda({params_bf16}, op);
    expect_shape(params_bf16, flat, "cuda::adamw_step: params_bf16");
    expect_dtype(params_bf16, DType::kBF16, "cuda::adamw_step: params_bf16");
  }
  launch_adamw_flat(static_cast<float*>(params.raw()), static_cast<const float*>(grads.raw()),
                    static_cast<float*>(exp_avg.raw()), static_cast<float*>(exp_avg_sq.raw()), bf16,
                    params.numel(), h, stream);
}

}  // namespace memento::ops::cuda
