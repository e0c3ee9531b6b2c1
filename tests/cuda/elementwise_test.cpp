// Parity of the CUDA elementwise ops with the CPU ops in bf16 and fp32, on aligned buffers
// (vectorised path plus tail) and on views one element in (scalar path); the f32 <-> bf16
// conversion against the host's rounding; determinism of sum_of_squares.
#include "core/cuda/elementwise.h"

#include <gtest/gtest.h>

#include <cmath>
#include <string>

#include "core/ops/elementwise.h"
#include "tests/cuda/cuda_testing.h"

namespace memento::testing {
namespace {

// Sizes below, at and past a pack of 8, odd tails, and ones past one grid of threads (2048
// blocks of 256 on the scalar path; 5M also on the vectorised path and for sum_of_squares).
const Shape kShapes[] = {Shape{1},       Shape{7},       Shape{8},       Shape{9},
                         Shape{3, 4099}, Shape{64, 768}, Shape{1 << 20}, Shape{5, 1000003}};

std::string label(const char* op, DType dtype, const Shape& s, bool misaligned) {
  return std::string(op) + "/" + std::string(dtype_name(dtype)) + s.str() +
         (misaligned ? "/misaligned" : "");
}

// A random GPU tensor and a view of `shape` into it: at its start, or one element in (so that
// no pointer is 16-byte aligned and the scalar path runs). The owner keeps the bytes alive.
struct Operand {
  Tensor owner;
  TensorView view;
};
Operand random_operand(const Shape& shape, DType dtype, uint64_t seed, bool misaligned,
                       float mean = 0.f, float std = 1.f) {
  const int64_t offset = misaligned ? 1 : 0;
  Operand op;
  op.owner = random_gpu(Shape{shape.numel() + offset}, dtype, seed, mean, std);
  op.view = op.owner.view().flat_range(offset, shape);
  return op;
}

class CudaElementwise : public CudaTest {};

TEST_F(CudaElementwise, AddMatchesCpu) {
  uint64_t seed = 1;
  for (DType dtype : {DType::kF32, DType::kBF16})
    for (const Shape& s : kShapes)
      for (bool misaligned : {false, true}) {
        const Operand acc = random_operand(s, dtype, seed++, misaligned);
        const Operand x = random_operand(s, dtype, seed++, misaligned);
        const Tensor ref = to_cpu_f64(acc.view);
        ops::add_(ref, to_cpu_f64(x.view));
        ops::cuda::add_(acc.view, x.view);
        expect_parity(label("add_", dtype, s, misaligned), acc.view, ref, dtype);
      }
}

TEST_F(CudaElementwise, AddToItselfDoubles) {
  const Tensor x = random_gpu(Shape{1003}, DType::kBF16, 3);
  const std::vector<double> x0 = values(x);
  ops::cuda::add_(x, x);
  const std::vector<double> doubled = values(x);
  for (size_t i = 0; i < x0.size(); ++i) EXPECT_EQ(doubled[i], 2 * x0[i]) << i;
}

TEST_F(CudaElementwise, ScaleMatchesCpu) {
  uint64_t seed = 100;
  for (DType dtype : {DType::kF32, DType::kBF16})
    for (const Shape& s : kShapes)
      for (bool misaligned : {false, true}) {
        const Operand x = random_operand(s, dtype, seed++, misaligned);
        const Tensor ref = to_cpu_f64(x.view);
        // alpha is fp32 on the GPU: scale the reference by the same rounded value.
        const double alpha = -1.7;
        ops::scale_(ref, static_cast<double>(static_cast<float>(alpha)));
        ops::cuda::scale_(x.view, alpha);
        expect_parity(label("scale_", dtype, s, misaligned), x.view, ref, dtype);
      }
}

TEST_F(CudaElementwise, SumOfSquaresMatchesCpu) {
  uint64_t seed = 200;
  for (DType dtype : {DType::kF32, DType::kBF16})
    for (const Shape& s : kShapes)
      for (bool misaligned : {false, true}) {
        const Operand x = random_operand(s, dtype, seed++, misaligned, 0.3f, 2.f);
        const double ref = ops::sum_of_squares(to_cpu_f64(x.view));
        const double got = ops::cuda::sum_of_squares(x.view);
        const double err = std::abs(got - ref) / std::abs(ref);
        const std::string what = label("sum_of_squares", dtype, s, misaligned);
        std::printf("[maxerr] %s %.3e\n", what.c_str(), err);
        // Exact inputs, fp32 packs of 8 and fp64 beyond: the fp32 row whatever the dtype.
        EXPECT_LE(err, parity_tolerance(DType::kF32)) << what;
      }
  EXPECT_EQ(ops::cuda::sum_of_squares(Tensor::empty(Shape{0}, DType::kF32, kGpu)), 0.0);
}

TEST_F(CudaElementwise, SumOfSquaresIsBitIdenticalAcrossRuns) {
  const Tensor x = random_gpu(Shape{3, 1000003}, DType::kF32, 7);
  const double first = ops::cuda::sum_of_squares(x);
  for (int run = 1; run < 4; ++run) EXPECT_EQ(ops::cuda::sum_of_squares(x), first) << run;
}

TEST_F(CudaElementwise, ConvertMatchesHostRounding) {
  uint64_t seed = 300;
  for (const Shape& s : kShapes)
    for (bool misaligned : {false, true}) {
      // f32 -> bf16 rounds like the host's copy (nearest even); bf16 -> f32 and f32 -> f32 are
      // exact. Wide values exercise the exponent range.
      const Operand f32 = random_operand(s, DType::kF32, seed++, misaligned, 0.f, 1000.f);
      const Operand bf16 = random_operand(s, DType::kBF16, seed++, misaligned);
      const Tensor host_bf16 = Tensor::empty(s, DType::kBF16);
      copy(f32.view, host_bf16);  // f32 -> bf16 on the host
      ops::cuda::convert(f32.view, bf16.view);
      EXPECT_EQ(values(bf16.view), values(host_bf16))
          << label("convert f32->bf16", DType::kF32, s, misaligned);

      const Operand back = random_operand(s, DType::kF32, seed++, misaligned);
      ops::cuda::convert(bf16.view, back.view);
      EXPECT_EQ(values(back.view), values(bf16.view))
          << label("convert bf16->f32", DType::kBF16, s, misaligned);

      const Operand same = random_operand(s, DType::kF32, seed++, misaligned);
      ops::cuda::convert(f32.view, same.view);
      EXPECT_EQ(values(same.view), values(f32.view))
          << label("convert f32->f32", DType::kF32, s, misaligned);
    }
}

TEST_F(CudaElementwise, RejectsMismatchedShapesAndDtypes) {
  const Tensor a = random_gpu(Shape{4, 8}, DType::kBF16, 1);
  EXPECT_THROW(ops::cuda::add_(a, random_gpu(Shape{4, 7}, DType::kBF16, 2)), ShapeError);
  EXPECT_THROW(ops::cuda::add_(a, random_gpu(Shape{4, 8}, DType::kF32, 3)), ShapeError);
  EXPECT_THROW(ops::cuda::add_(a, Tensor::empty(Shape{4, 8}, DType::kBF16)), ShapeError);
  EXPECT_THROW(ops::cuda::scale_(Tensor::empty(Shape{3}, DType::kF64, kGpu), 2.0), ShapeError);
  EXPECT_THROW(ops::cuda::sum_of_squares(Tensor::empty(Shape{3}, DType::kI32, kGpu)), ShapeError);
  EXPECT_THROW(ops::cuda::convert(a, Tensor::empty(Shape{8, 4}, DType::kF32, kGpu)), ShapeError);
  EXPECT_THROW(ops::cuda::convert(a, Tensor::empty(Shape{4, 8}, DType::kF64, kGpu)), ShapeError);
}

}  // namespace
}  // namespace memento::testing
