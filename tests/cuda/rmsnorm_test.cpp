// Parity of the CUDA RMSNorm with the CPU op over a grid of shapes, in bf16 and fp32.
#include "core/cuda/rmsnorm.h"

#include <gtest/gtest.h>

#include "core/cuda/elementwise.h"
#include "core/ops/rmsnorm.h"
#include "tests/cuda/cuda_testing.h"

namespace memento::testing {
namespace {

constexpr double kEps = 1e-5;

struct Case {
  Shape x;  // (..., C)
  DType dtype;
};

std::string label(const char* op, const Case& c) {
  return std::string(op) + "/" + std::string(dtype_name(c.dtype)) + c.x.str();
}

std::vector<Case> grid() {
  std::vector<Case> cases;
  for (DType dtype : {DType::kF32, DType::kBF16})
    // 4100 rows: 16 or 17 per weight-gradient row block, so whole groups of loads and a tail.
    for (const Shape& s : {Shape{1, 1}, Shape{3, 7}, Shape{4, 32}, Shape{2, 5, 33}, Shape{17, 100},
                           Shape{64, 768}, Shape{300, 1024}, Shape{9, 4099}, Shape{4100, 96}})
      cases.push_back({s, dtype});
  return cases;
}

class CudaRmsnorm : public CudaTest {};

TEST_F(CudaRmsnorm, ForwardMatchesCpu) {
  uint64_t seed = 1;
  for (const Case& c : grid()) {
    const int64_t C = c.x[-1];
    const int64_t rows = c.x.numel() / C;
    const Tensor x = random_gpu(c.x, c.dtype, seed++, 0.5f, 2.f);           // (..., C)
    const Tensor w = random_gpu(Shape{C}, DType::kF32, seed++, 1.f, 0.2f);  // (C)
    const Tensor y = Tensor::empty(c.x, c.dtype, kGpu);                     // (..., C)
    const Tensor rstd = Tensor::empty(Shape{rows}, DType::kF32, kGpu);      // (rows)
    ops::cuda::rmsnorm_forward(x, w, kEps, y, rstd);

    const Tensor y_ref = Tensor::empty(c.x, DType::kF64);
    const Tensor rstd_ref = Tensor::empty(Shape{rows}, DType::kF64);
    ops::rmsnorm_forward(to_cpu_f64(x), to_cpu_f64(w), kEps, y_ref, rstd_ref);
    expect_parity(label("rmsnorm_forward.y", c), y, y_ref, c.dtype);
    // rstd is fp32 whatever the activations are.
    expect_parity(label("rmsnorm_forward.rstd", c), rstd, rstd_ref, DType::kF32);
  }
}

TEST_F(CudaRmsnorm, BackwardMatchesCpuAndAccumulatesDweight) {
  uint64_t seed = 100;
  for (const Case& c : grid()) {
    const int64_t C = c.x[-1];
    const int64_t rows = c.x.numel() / C;
    const Tensor x = random_gpu(c.x, c.dtype, seed++);                      // (..., C)
    const Tensor dy = random_gpu(c.x, c.dtype, seed++);                     // (..., C)
    const Tensor w = random_gpu(Shape{C}, DType::kF32, seed++, 1.f, 0.2f);  // (C)
    const Tensor dw = random_gpu(Shape{C}, DType::kF32, seed++);            // (C), accumulated
    const Tensor y = Tensor::empty(c.x, c.dtype, kGpu);
    const Tensor rstd = Tensor::empty(Shape{rows}, DType::kF32, kGpu);
    ops::cuda::rmsnorm_forward(x, w, kEps, y, rstd);

    // The CPU backward gets the GPU's own rstd so that only the backward is compared.
    const Tensor dw_ref = to_cpu_f64(dw);
    const Tensor dx_ref = Tensor::empty(c.x, DType::kF64);
    ops::rmsnorm_backward(to_cpu_f64(dy), to_cpu_f64(x), to_cpu_f64(w), to_cpu_f64(rstd), dx_ref,
                          dw_ref);
    const Tensor dx = Tensor::empty(c.x, c.dtype, kGpu);
    ops::cuda::rmsnorm_backward(dy, x, w, rstd, dx, dw);
    // With C = 1, y = x / |x| * w is flat and dx = s dy w (1 - s^2 x^2) is pure cancellation
    // (about eps / x^2 of its terms): a relative comparison measures rounding noise, not the op.
    if (C > 1) expect_parity(label("rmsnorm_backward.dx", c), dx, dx_ref, c.dtype);
    // dweight is fp32 and sums fp32 products of exactly the values the CPU sees.
    expect_parity(label("rmsnorm_backward.dweight", c), dw, dw_ref, DType::kF32);
  }
}

// x += residual fused into the forward: x holds the sum rounded to its dtype (the same bits as
// add_), and y and rstd match the CPU op run on that sum; 16-byte and scalar paths.
TEST_F(CudaRmsnorm, ForwardWithResidualMatchesAddThenForward) {
  uint64_t seed = 700;
  for (const Case& c : grid()) {
    const int64_t C = c.x[-1];
    const int64_t rows = c.x.numel() / C;
    const Tensor x = random_gpu(c.x, c.dtype, seed++, 0.5f, 2.f);
    const Tensor r = random_gpu(c.x, c.dtype, seed++);
    const Tensor w = random_gpu(Shape{C}, DType::kF32, seed++, 1.f, 0.2f);
    const Tensor sum = Tensor::empty(c.x, c.dtype, kGpu);
    copy(x, sum);
    ops::cuda::add_(sum, r);
    const Tensor y = Tensor::empty(c.x, c.dtype, kGpu);
    const Tensor rstd = Tensor::empty(Shape{rows}, DType::kF32, kGpu);
    const TensorView residual = r;
    ops::cuda::rmsnorm_forward(x, w, kEps, y, rstd, &residual);
    EXPECT_EQ(values(x), values(sum)) << label("rmsnorm_forward.x+residual", c);
    const Tensor y_ref = Tensor::empty(c.x, DType::kF64);
    const Tensor rstd_ref = Tensor::empty(Shape{rows}, DType::kF64);
    ops::rmsnorm_forward(to_cpu_f64(sum), to_cpu_f64(w), kEps, y_ref, rstd_ref);
    expect_parity(label("rmsnorm_forward.y(residual)", c), y, y_ref, c.dtype);
    expect_parity(label("rmsnorm_forward.rstd(residual)", c), rstd, rstd_ref, DType::kF32);
  }
  for (DType dtype : {DType::kF32, DType::kBF16}) {
    const Case c{Shape{2100, 64}, dtype};
    const MisalignedGpu x = random_gpu_misaligned(c.x, dtype, seed++);
    const MisalignedGpu r = random_gpu_misaligned(c.x, dtype, seed++);
    const Tensor w = random_gpu(Shape{64}, DType::kF32, seed++, 1.f, 0.2f);
    const Tensor sum = Tensor::empty(c.x, dtype, kGpu);
    copy(x.view, sum);
    ops::cuda::add_(sum, r.view);
    const Tensor y = Tensor::empty(c.x, dtype, kGpu);
    const Tensor rstd = Tensor::empty(Shape{2100}, DType::kF32, kGpu);
    ops::cuda::rmsnorm_forward(x.view, w, kEps, y, rstd, &r.view);
    EXPECT_EQ(values(x.view), values(sum)) << label("rmsnorm_forward.x+residual.misaligned", c);
    const Tensor y_ref = Tensor::empty(c.x, DType::kF64);
    const Tensor rstd_ref = Tensor::empty(Shape{2100}, DType::kF64);
    ops::rmsnorm_forward(to_cpu_f64(sum), to_cpu_f64(w), kEps, y_ref, rstd_ref);
    expect_parity(label("rmsnorm_forward.y(residual).misaligned", c), y, y_ref, dtype);
  }
}

// dx + residual, summed before rounding: against the CPU op in fp64 with the same residual, and
// in fp32 bit for bit against the backward followed by add_.
TEST_F(CudaRmsnorm, BackwardWithResidualMatchesCpu) {
  uint64_t seed = 500;
  for (const Case& c : grid()) {
    const int64_t C = c.x[-1];
    const int64_t rows = c.x.numel() / C;
    const Tensor x = random_gpu(c.x, c.dtype, seed++);
    const Tensor dy = random_gpu(c.x, c.dtype, seed++);
    const Tensor r = random_gpu(c.x, c.dtype, seed++);
    const Tensor w = random_gpu(Shape{C}, DType::kF32, seed++, 1.f, 0.2f);
    const Tensor dw = Tensor::zeros(Shape{C}, DType::kF32, kGpu);
    const Tensor y = Tensor::empty(c.x, c.dtype, kGpu);
    const Tensor rstd = Tensor::empty(Shape{rows}, DType::kF32, kGpu);
    ops::cuda::rmsnorm_forward(x, w, kEps, y, rstd);
    const Tensor dx = Tensor::empty(c.x, c.dtype, kGpu);
    const TensorView residual = r;
    ops::cuda::rmsnorm_backward(dy, x, w, rstd, dx, dw, &residual);

    const Tensor dw_ref = Tensor::zeros(Shape{C}, DType::kF64);
    const Tensor dx_ref = Tensor::empty(c.x, DType::kF64);
    const Tensor r64 = to_cpu_f64(r);
    const TensorView residual_ref = r64;
    ops::rmsnorm_backward(to_cpu_f64(dy), to_cpu_f64(x), to_cpu_f64(w), to_cpu_f64(rstd), dx_ref,
                          dw_ref, &residual_ref);
    expect_parity(label("rmsnorm_backward.dx+residual", c), dx, dx_ref, c.dtype);
    expect_parity(label("rmsnorm_backward.dweight(residual)", c), dw, dw_ref, DType::kF32);
    if (c.dtype == DType::kF32) {
      const Tensor separate = Tensor::empty(c.x, c.dtype, kGpu);
      const Tensor dw2 = Tensor::zeros(Shape{C}, DType::kF32, kGpu);
      ops::cuda::rmsnorm_backward(dy, x, w, rstd, separate, dw2);
      ops::cuda::add_(separate, r);
      EXPECT_EQ(values(dx), values(separate)) << label("rmsnorm_backward.fused_vs_add", c);
    }
  }
  // The scalar path: every tensor one element off 16-byte alignment.
  for (DType dtype : {DType::kF32, DType::kBF16}) {
    const Case c{Shape{2100, 64}, dtype};
    const MisalignedGpu x = random_gpu_misaligned(c.x, dtype, seed++);
    const MisalignedGpu dy = random_gpu_misaligned(c.x, dtype, seed++);
    const MisalignedGpu r = random_gpu_misaligned(c.x, dtype, seed++);
    const MisalignedGpu dx = random_gpu_misaligned(c.x, dtype, seed++);
    const Tensor w = random_gpu(Shape{64}, DType::kF32, seed++, 1.f, 0.2f);
    const Tensor dw = Tensor::zeros(Shape{64}, DType::kF32, kGpu);
    const Tensor y = Tensor::empty(c.x, dtype, kGpu);
    const Tensor rstd = Tensor::empty(Shape{2100}, DType::kF32, kGpu);
    ops::cuda::rmsnorm_forward(x.view, w, kEps, y, rstd);
    ops::cuda::rmsnorm_backward(dy.view, x.view, w, rstd, dx.view, dw, &r.view);
    const Tensor dw_ref = Tensor::zeros(Shape{64}, DType::kF64);
    const Tensor dx_ref = Tensor::empty(c.x, DType::kF64);
    const Tensor r64 = to_cpu_f64(r.view);
    const TensorView residual_ref = r64;
    ops::rmsnorm_backward(to_cpu_f64(dy.view), to_cpu_f64(x.view), to_cpu_f64(w), to_cpu_f64(rstd),
                          dx_ref, dw_ref, &residual_ref);
    expect_parity(label("rmsnorm_backward.dx+residual.misaligned", c), dx.view, dx_ref, dtype);
  }
}

// dy, x, dx one element in: the scalar paths of the backward where C allows 16-byte packs.
TEST_F(CudaRmsnorm, BackwardOnMisalignedViewsMatchesCpu) {
  uint64_t seed = 300;
  for (DType dtype : {DType::kF32, DType::kBF16}) {
    const Case c{Shape{2100, 64}, dtype};
    const int64_t C = c.x[-1];
    const int64_t rows = c.x.numel() / C;
    const MisalignedGpu x = random_gpu_misaligned(c.x, c.dtype, seed++);
    const MisalignedGpu dy = random_gpu_misaligned(c.x, c.dtype, seed++);
    const MisalignedGpu dx = random_gpu_misaligned(c.x, c.dtype, seed++);
    const Tensor w = random_gpu(Shape{C}, DType::kF32, seed++, 1.f, 0.2f);  // (C)
    const Tensor dw = random_gpu(Shape{C}, DType::kF32, seed++);            // (C), accumulated
    const Tensor y = Tensor::empty(c.x, c.dtype, kGpu);
    const Tensor rstd = Tensor::empty(Shape{rows}, DType::kF32, kGpu);
    ops::cuda::rmsnorm_forward(x.view, w, kEps, y, rstd);

    const Tensor dw_ref = to_cpu_f64(dw);
    const Tensor dx_ref = Tensor::empty(c.x, DType::kF64);
    ops::rmsnorm_backward(to_cpu_f64(dy.view), to_cpu_f64(x.view), to_cpu_f64(w), to_cpu_f64(rstd),
                          dx_ref, dw_ref);
    ops::cuda::rmsnorm_backward(dy.view, x.view, w, rstd, dx.view, dw);
    expect_parity(label("rmsnorm_backward.dx.misaligned", c), dx.view, dx_ref, c.dtype);
    expect_parity(label("rmsnorm_backward.dweight.misaligned", c), dw, dw_ref, DType::kF32);
  }
}

TEST_F(CudaRmsnorm, DweightIsBitIdenticalAcrossRuns) {
  const Shape s{1000, 512};
  const Tensor x = random_gpu(s, DType::kBF16, 7);
  const Tensor dy = random_gpu(s, DType::kBF16, 8);
  const Tensor w = random_gpu(Shape{512}, DType::kF32, 9);
  const Tensor rstd = Tensor::empty(Shape{1000}, DType::kF32, kGpu);
  const Tensor y = Tensor::empty(s, DType::kBF16, kGpu);
  const Tensor dx = Tensor::empty(s, DType::kBF16, kGpu);
  ops::cuda::rmsnorm_forward(x, w, kEps, y, rstd);
  std::vector<double> first;
  for (int run = 0; run < 3; ++run) {
    const Tensor dw = Tensor::zeros(Shape{512}, DType::kF32, kGpu);
    ops::cuda::rmsnorm_backward(dy, x, w, rstd, dx, dw);
    if (run == 0)
      first = values(dw);
    else
      EXPECT_EQ(values(dw), first) << "run " << run;
  }
}

TEST_F(CudaRmsnorm, RejectsMismatchedShapesAndDtypes) {
  const Tensor x = random_gpu(Shape{4, 8}, DType::kBF16, 1);
  const Tensor w = random_gpu(Shape{8}, DType::kF32, 2);
  const Tensor y = Tensor::empty(Shape{4, 8}, DType::kBF16, kGpu);
  const Tensor rstd = Tensor::empty(Shape{4}, DType::kF32, kGpu);
  EXPECT_THROW(ops::cuda::rmsnorm_forward(x, random_gpu(Shape{7}, DType::kF32, 3), kEps, y, rstd),
               ShapeError);
  EXPECT_THROW(ops::cuda::rmsnorm_forward(x, random_gpu(Shape{8}, DType::kBF16, 3), kEps, y, rstd),
               ShapeError);
  EXPECT_THROW(
      ops::cuda::rmsnorm_forward(x, w, kEps, Tensor::empty(Shape{4, 8}, DType::kF32, kGpu), rstd),
      ShapeError);
  EXPECT_THROW(ops::cuda::rmsnorm_forward(x, w, kEps, y, Tensor::empty(Shape{4}, DType::kF32)),
               ShapeError);
}

}  // namespace
}  // namespace memento::testing
