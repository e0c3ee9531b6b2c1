// Parity of the fused CUDA AdamW with optim::AdamW on the CPU over several steps, parameters
// with and without weight decay, and the optional bf16 copy of the weights.
#include "core/cuda/adamw.h"

#include <gtest/gtest.h>

#include "core/parameters.h"
#include "optim/adamw.h"
#include "tests/cuda/cuda_testing.h"

namespace memento::testing {
namespace {

class CudaAdamW : public CudaTest {};

TEST_F(CudaAdamW, MatchesCpuOptimizerOverSteps) {
  constexpr double kLr = 3e-3;
  constexpr int kSteps = 5;
  for (int64_t n : {int64_t{1}, int64_t{17}, int64_t{1000}, int64_t{300001}}) {
    ParameterSet params;
    params.declare("w", Shape{n}, ParamInit::normal(0.5f), /*weight_decay=*/true);
    params.declare("norm", Shape{n / 2 + 1}, ParamInit::ones(), /*weight_decay=*/false);
    params.allocate(DType::kF32);
    params.initialize(42);
    const optim::AdamWOptions options;
    optim::AdamW cpu(params, options);

    // The same flat layout on the GPU.
    const int64_t total = params.padded_numel();
    const Tensor p = Tensor::empty(Shape{total}, DType::kF32, kGpu);
    copy(params.flat_values(), p);
    const Tensor m = Tensor::zeros(Shape{total}, DType::kF32, kGpu);
    const Tensor v = Tensor::zeros(Shape{total}, DType::kF32, kGpu);
    const Tensor p_bf16 = Tensor::zeros(Shape{total}, DType::kBF16, kGpu);

    for (int step = 1; step <= kSteps; ++step) {
      const Tensor g = random_gpu(Shape{total}, DType::kF32, 1000 * step + n, 0.f, 0.1f);
      copy(g, params.flat_grads());
      // Clipping's factor on some steps (fused into the update on both sides).
      const double grad_scale = step % 2 == 0 ? 0.3 : 1.0;
      cpu.step(params, kLr, grad_scale);
      for (const auto& e : params.entries()) {
        const ops::cuda::AdamWHyper h{kLr,
                                      options.beta1,
                                      options.beta2,
                                      options.eps,
                                      e.weight_decay ? options.weight_decay : 0.0,
                                      step,
                                      grad_scale};
        const Shape s{e.shape.numel()};
        ops::cuda::adamw_step(p.view().flat_range(e.offset, s), g.view().flat_range(e.offset, s),
                              m.view().flat_range(e.offset, s), v.view().flat_range(e.offset, s),
                              p_bf16.view().flat_range(e.offset, s), h);
      }
    }
    const std::string n_str = ::memento::detail::concat("[", n, "]");
    expect_parity("adamw.params" + n_str, p, params.flat_values(), DType::kF32);
    expect_parity("adamw.exp_avg" + n_str, m, cpu.exp_avg(), DType::kF32);
    expect_parity("adamw.exp_avg_sq" + n_str, v, cpu.exp_avg_sq(), DType::kF32);
    expect_parity("adamw.params_bf16" + n_str, p_bf16, params.flat_values(), DType::kBF16);
  }
}

// Buffers one element off 16-byte alignment take the scalar path: the same bits as the vector one.
TEST_F(CudaAdamW, ScalarPathEqualsVectorPath) {
  const int64_t n = 1003;  // packs of 8 and a tail of 3
  const Shape s{n};
  const ops::cuda::AdamWHyper h{1e-2, 0.9, 0.95, 1e-8, 0.1, 3, 0.5};
  const Tensor p0 = random_gpu(s, DType::kF32, 1), g0 = random_gpu(s, DType::kF32, 2);
  const Tensor m0 = random_gpu(s, DType::kF32, 3, 0.f, 0.1f);
  const Tensor v0 = random_gpu(s, DType::kF32, 4, 1.f, 0.1f);
  std::vector<std::vector<double>> results[2];
  for (int64_t o = 0; o < 2; ++o) {  // o = 1: every buffer one element off alignment
    auto at_offset = [&](const Tensor& base, DType dtype) {
      const Tensor t = Tensor::zeros(Shape{n + 1}, dtype, kGpu);
      if (base.defined()) copy(base, t.view().flat_range(o, s));
      return t;
    };
    const Tensor p = at_offset(p0, DType::kF32), g = at_offset(g0, DType::kF32);
    const Tensor m = at_offset(m0, DType::kF32), v = at_offset(v0, DType::kF32);
    const Tensor b = at_offset(Tensor(), DType::kBF16);
    ops::cuda::adamw_step(p.view().flat_range(o, s), g.view().flat_range(o, s),
                          m.view().flat_range(o, s), v.view().flat_range(o, s),
                          b.view().flat_range(o, s), h);
    for (const Tensor* t : {&p, &m, &v, &b})
      results[o].push_back(values(t->view().flat_range(o, s)));
  }
  for (size_t i = 0; i < results[0].size(); ++i)
    EXPECT_EQ(results[0][i], results[1][i]) << "buffer " << i;
}

TEST_F(CudaAdamW, WithoutBf16CopyAndRejectsBadShapes) {
  const Tensor p = random_gpu(Shape{100}, DType::kF32, 1);
  const Tensor g = random_gpu(Shape{100}, DType::kF32, 2);
  const Tensor m = Tensor::zeros(Shape{100}, DType::kF32, kGpu);
  const Tensor v = Tensor::zeros(Shape{100}, DType::kF32, kGpu);
  const std::vector<double> before = values(p);
  ops::cuda::adamw_step(p, g, m, v, TensorView(), {1e-2, 0.9, 0.95, 1e-8, 0.1, 1});
  EXPECT_NE(values(p), before);
  EXPECT_THROW(ops::cuda::adamw_step(p, random_gpu(Shape{99}, DType::kF32, 3), m, v, TensorView(),
                                     {1e-2, 0.9, 0.95, 1e-8, 0.1, 1}),
               ShapeError);
  EXPECT_THROW(ops::cuda::adamw_step(p, g, m, v, TensorView(), {1e-2, 0.9, 0.95, 1e-8, 0.1, 0}),
               ShapeError);
}

}  // namespace
}  // namespace memento::testing
