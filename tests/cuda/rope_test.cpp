// Parity of the CUDA RoPE with the CPU op over a grid of shapes, in bf16 and fp32. The GPU gets
// fp32 tables; the CPU reference runs in fp64 on exactly those table values.
#include "core/cuda/rope.h"

#include <gtest/gtest.h>

#include "core/ops/rope.h"
#include "tests/cuda/cuda_testing.h"
#include "tests/testing/expect_error.h"

namespace memento::testing {
namespace {

constexpr double kTheta = 10000.0;

struct Case {
  Shape x;  // (B, T, NH, HS)
  DType dtype;
};

std::string label(const char* op, const Case& c) {
  return std::string(op) + "/" + std::string(dtype_name(c.dtype)) + c.x.str();
}

std::vector<Case> grid() {
  std::vector<Case> cases;
  for (DType dtype : {DType::kF32, DType::kBF16})
    for (const Shape& s :
         {Shape{1, 1, 1, 2}, Shape{2, 7, 3, 16}, Shape{2, 33, 4, 32}, Shape{1, 128, 8, 64},
          Shape{2, 64, 3, 128}, Shape{3, 5, 2, 96}, Shape{4, 1024, 12, 64}, Shape{2, 2048, 8, 128},
          // HS/2 = 4 (bf16: no whole 16-byte pack, scalar path) and HS/2 = 9 (odd: scalar path)
          Shape{2, 9, 3, 8}, Shape{2, 5, 2, 18}})
      cases.push_back({s, dtype});
  return cases;
}

// The fp32 tables on the GPU and their exact values in fp64 for the CPU op.
struct Tables {
  Tensor cos, sin;           // (T, HS/2) f32 on the GPU
  ops::RopeTable reference;  // (T, HS/2) f64 on the CPU
};

Tables tables(int64_t T, int64_t HS, int64_t first_position = 0) {
  const ops::RopeTable host =
      ops::rope_table(T, HS, kTheta, DType::kF32, Device::cpu(), first_position);
  Tables t{Tensor::empty(host.cos.shape(), DType::kF32, kGpu),
           Tensor::empty(host.sin.shape(), DType::kF32, kGpu),
           {to_cpu_f64(host.cos), to_cpu_f64(host.sin)}};
  copy(host.cos, t.cos);
  copy(host.sin, t.sin);
  return t;
}

class CudaRope : public CudaTest {};

TEST_F(CudaRope, ForwardAndBackwardMatchCpu) {
  uint64_t seed = 1;
  for (const Case& c : grid()) {
    const Tables tab = tables(c.x[1], c.x[3]);
    const Tensor x = random_gpu(c.x, c.dtype, seed++);  // (B, T, NH, HS)
    const Tensor x_ref = to_cpu_f64(x);
    ops::rope_(x_ref, tab.reference);
    ops::cuda::rope_(x, tab.cos, tab.sin);
    expect_parity(label("rope.x", c), x, x_ref, c.dtype);

    const Tensor dx = random_gpu(c.x, c.dtype, seed++);  // (B, T, NH, HS)
    const Tensor dx_ref = to_cpu_f64(dx);
    ops::rope_backward_(dx_ref, tab.reference);
    ops::cuda::rope_backward_(dx, tab.cos, tab.sin);
    expect_parity(label("rope_backward.dx", c), dx, dx_ref, c.dtype);
  }
}

TEST_F(CudaRope, OffsetPositionsMatchCpu) {
  // A sequence-parallel rank's slice: positions 4096 .. 4096 + T - 1.
  const Case c{Shape{2, 256, 4, 128}, DType::kBF16};
  const Tables tab = tables(c.x[1], c.x[3], 4096);
  const Tensor x = random_gpu(c.x, c.dtype, 7);
  const Tensor x_ref = to_cpu_f64(x);
  ops::rope_(x_ref, tab.reference);
  ops::cuda::rope_(x, tab.cos, tab.sin);
  expect_parity(label("rope.x.offset", c), x, x_ref, c.dtype);
}

// x one element in: the scalar path where HS/2 would allow 16-byte packs.
TEST_F(CudaRope, MisalignedViewMatchesCpu) {
  uint64_t seed = 70;
  for (DType dtype : {DType::kF32, DType::kBF16}) {
    const Case c{Shape{2, 64, 4, 64}, dtype};
    const Tables tab = tables(c.x[1], c.x[3]);
    const MisalignedGpu x = random_gpu_misaligned(c.x, c.dtype, seed++);
    const Tensor x_ref = to_cpu_f64(x.view);
    ops::rope_(x_ref, tab.reference);
    ops::cuda::rope_(x.view, tab.cos, tab.sin);
    expect_parity(label("rope.x.misaligned", c), x.view, x_ref, c.dtype);
    ops::rope_backward_(x_ref, tab.reference);
    ops::cuda::rope_backward_(x.view, tab.cos, tab.sin);
    expect_parity(label("rope_backward.dx.misaligned", c), x.view, x_ref, c.dtype);
  }
}

TEST_F(CudaRope, BackwardUndoesForwardInFp32) {
  const Shape s{2, 64, 4, 64};
  const Tables tab = tables(s[1], s[3]);
  const Tensor x = random_gpu(s, DType::kF32, 3);
  const Tensor x0 = to_cpu_f64(x);
  ops::cuda::rope_(x, tab.cos, tab.sin);
  ops::cuda::rope_backward_(x, tab.cos, tab.sin);
  expect_parity("rope.roundtrip/f32" + s.str(), x, x0, DType::kF32);
}

TEST_F(CudaRope, RejectsMismatchedShapesAndDtypes) {
  const Tables tab = tables(8, 16);
  const Tensor x = random_gpu(Shape{2, 8, 3, 16}, DType::kBF16, 1);
  expect_shape_error(
      [&] {
        ops::cuda::rope_(random_gpu(Shape{2, 8, 3, 15}, DType::kBF16, 2), tab.cos, tab.sin);
      },
      "head size must be even");
  expect_shape_error(
      [&] {
        ops::cuda::rope_(random_gpu(Shape{2, 9, 3, 16}, DType::kBF16, 2), tab.cos, tab.sin);
      },
      "cuda::rope_: rope table cos");
  expect_shape_error(
      [&] {
        ops::cuda::rope_(random_gpu(Shape{8, 3, 16}, DType::kBF16, 2), tab.cos, tab.sin);
      },
      "(B, T, NH, HS)");
  // The tables are fp32 whatever the activations are.
  const Tensor cos_bf16 = random_gpu(Shape{8, 8}, DType::kBF16, 3);
  expect_shape_error([&] { ops::cuda::rope_backward_(x, cos_bf16, tab.sin); },
                     "cuda::rope_backward_: rope table cos");
  expect_shape_error([&] { ops::cuda::rope_(x, tab.reference.cos, tab.sin); }, "cuda::rope_");
}

}  // namespace
}  // namespace memento::testing
