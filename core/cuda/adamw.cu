#include "core/cuda/adamw.h"

#include <cmath>

#include "core/cuda/check.h"
#include "core/cuda/kernel_common.cuh"

namespace memento::ops::cuda {
namespace {

constexpr int kThreads = 256;

// Scalars derived on the host in fp64 and rounded once, exactly as the CPU optimizer does.
struct AdamWScalars {
  float beta1, beta2, step_size, inv_sqrt_bias2, eps, decay;
};

__global__ void adamw_flat_elementwise(float* __restrict__ p, const float* __restrict__ g,
                                       float* __restrict__ m, float* __restrict__ v,
                                       __nv_bfloat16* __restrict__ p_bf16, int64_t n,
                                       AdamWScalars k) {
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const float gi = g[i];
    const float mi = k.beta1 * m[i] + (1.0f - k.beta1) * gi;
    const float vi = k.beta2 * v[i] + (1.0f - k.beta2) * gi * gi;
    const float pi = p[i] * k.decay - k.step_size * mi / (sqrtf(vi) * k.inv_sqrt_bias2 + k.eps);
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
  const AdamWScalars k{static_cast<float>(h.beta1),
                       static_cast<float>(h.beta2),
                       static_cast<float>(h.lr / bias1),
                       static_cast<float>(1.0 / std::sqrt(bias2)),
                       static_cast<float>(h.eps),
                       static_cast<float>(1.0 - h.lr * h.weight_decay)};
  adamw_flat_elementwise<<<memento::cuda::detail::blocks_for(n, kThreads), kThreads, 0, stream>>>(
      params, grads, exp_avg, exp_avg_sq, static_cast<__nv_bfloat16*>(params_bf16), n, k);
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
