// Parity of the CUDA SwiGLU with the CPU op over a grid of shapes, in bf16 and fp32.
#include "core/cuda/swiglu.h"

#include <gtest/gtest.h>

#include <utility>

#include "core/ops/swiglu.h"
#include "tests/cuda/cuda_testing.h"

namespace memento::testing {
namespace {

std::vector<Shape> shapes() {
  return {Shape{1}, Shape{7}, Shape{3, 33}, Shape{2, 5, 64}, Shape{128, 1000}, Shape{3, 70001}};
}

std::string label(const char* op, DType dtype, const Shape& s) {
  return std::string(op) + "/" + std::string(dtype_name(dtype)) + s.str();
}

class CudaSwiglu : public CudaTest {};

TEST_F(CudaSwiglu, ForwardAndBackwardMatchCpu) {
  uint64_t seed = 1;
  for (DType dtype : {DType::kF32, DType::kBF16}) {
    for (const Shape& s : shapes()) {
      const Tensor g = random_gpu(s, dtype, seed++, 0.f, 3.f);  // (..., F)
      const Tensor u = random_gpu(s, dtype, seed++);            // (..., F)
      const Tensor dh = random_gpu(s, dtype, seed++);           // (..., F)
      const Tensor h = Tensor::empty(s, dtype, kGpu);
      const Tensor dg = Tensor::empty(s, dtype, kGpu);
      const Tensor du = Tensor::empty(s, dtype, kGpu);
      ops::cuda::swiglu_forward(g, u, h);
      ops::cuda::swiglu_backward(dh, g, u, dg, du);

      const Tensor g64 = to_cpu_f64(g), u64 = to_cpu_f64(u), dh64 = to_cpu_f64(dh);
      const Tensor h_ref = Tensor::empty(s, DType::kF64);
      const Tensor dg_ref = Tensor::empty(s, DType::kF64);
      const Tensor du_ref = Tensor::empty(s, DType::kF64);
      ops::swiglu_forward(g64, u64, h_ref);
      ops::swiglu_backward(dh64, g64, u64, dg_ref, du_ref);
      expect_parity(label("swiglu_forward.h", dtype, s), h, h_ref, dtype);
      expect_parity(label("swiglu_backward.dg", dtype, s), dg, dg_ref, dtype);
      expect_parity(label("swiglu_backward.du", dtype, s), du, du_ref, dtype);
    }
  }
}

// Views one element in: the scalar path of both kernels (the grid above takes the 16-byte one).
TEST_F(CudaSwiglu, MisalignedViewsMatchCpu) {
  uint64_t seed = 50;
  for (DType dtype : {DType::kF32, DType::kBF16}) {
    const Shape s{3, 70001};
    const MisalignedGpu g = random_gpu_misaligned(s, dtype, seed++, 0.f, 3.f);
    const MisalignedGpu u = random_gpu_misaligned(s, dtype, seed++);
    const MisalignedGpu dh = random_gpu_misaligned(s, dtype, seed++);
    const MisalignedGpu h = random_gpu_misaligned(s, dtype, seed++);
    const MisalignedGpu dg = random_gpu_misaligned(s, dtype, seed++);
    const MisalignedGpu du = random_gpu_misaligned(s, dtype, seed++);
    const MisalignedGpu h2 = random_gpu_misaligned(s, dtype, seed++);
    ops::cuda::swiglu_forward(g.view, u.view, h.view);
    ops::cuda::swiglu_backward(dh.view, g.view, u.view, dg.view, du.view, &h2.view);
    EXPECT_EQ(values(h2.view), values(h.view)) << "rebuilt h, " << dtype_name(dtype);

    const Tensor g64 = to_cpu_f64(g.view), u64 = to_cpu_f64(u.view), dh64 = to_cpu_f64(dh.view);
    const Tensor h_ref = Tensor::empty(s, DType::kF64);
    const Tensor dg_ref = Tensor::empty(s, DType::kF64);
    const Tensor du_ref = Tensor::empty(s, DType::kF64);
    ops::swiglu_forward(g64, u64, h_ref);
    ops::swiglu_backward(dh64, g64, u64, dg_ref, du_ref);
    expect_parity(label("swiglu_forward.h.misaligned", dtype, s), h.view, h_ref, dtype);
    expect_parity(label("swiglu_backward.dg.misaligned", dtype, s), dg.view, dg_ref, dtype);
    expect_parity(label("swiglu_backward.du.misaligned", dtype, s), du.view, du_ref, dtype);
  }
}

TEST_F(CudaSwiglu, BackwardRunsInPlace) {
  const Shape s{64, 100};
  const Tensor g = random_gpu(s, DType::kF32, 1), u = random_gpu(s, DType::kF32, 2);
  const Tensor dh = random_gpu(s, DType::kF32, 3);
  const Tensor dg = Tensor::empty(s, DType::kF32, kGpu), du = Tensor::empty(s, DType::kF32, kGpu);
  ops::cuda::swiglu_backward(dh, g, u, dg, du);
  ops::cuda::swiglu_backward(dh, g, u, g, u);  // dg aliases g, du aliases u
  EXPECT_EQ(values(g), values(dg));
  EXPECT_EQ(values(u), values(du));
  // bf16, 16-byte packs with a tail (6403 = 800 packs of 8 + 3)
  const Shape t{19, 337};
  const Tensor gb = random_gpu(t, DType::kBF16, 4), ub = random_gpu(t, DType::kBF16, 5);
  const Tensor dhb = random_gpu(t, DType::kBF16, 6);
  const Tensor dgb = Tensor::empty(t, DType::kBF16, kGpu);
  const Tensor dub = Tensor::empty(t, DType::kBF16, kGpu);
  ops::cuda::swiglu_backward(dhb, gb, ub, dgb, dub);
  ops::cuda::swiglu_backward(dhb, gb, ub, gb, ub);
  EXPECT_EQ(values(gb), values(dgb));
  EXPECT_EQ(values(ub), values(dub));
}

// The backward's h (written over dh, as the MLP does) is the forward's h bit for bit, on the
// 16-byte path with a tail and on the scalar path.
TEST_F(CudaSwiglu, BackwardRebuildsForwardOutputInPlace) {
  uint64_t seed = 70;
  for (DType dtype : {DType::kF32, DType::kBF16}) {
    for (const Shape& s : {Shape{19, 337}, Shape{7}}) {
      const Tensor g = random_gpu(s, dtype, seed++, 0.f, 3.f), u = random_gpu(s, dtype, seed++);
      const Tensor dh = random_gpu(s, dtype, seed++);
      const Tensor h = Tensor::empty(s, dtype, kGpu);
      const Tensor dg = Tensor::empty(s, dtype, kGpu), du = Tensor::empty(s, dtype, kGpu);
      ops::cuda::swiglu_forward(g, u, h);
      ops::cuda::swiglu_backward(dh, g, u, dg, du);
      const TensorView in_place = dh;
      ops::cuda::swiglu_backward(dh, g, u, g, u, &in_place);
      const std::string where = label("swiglu_backward.h", dtype, s);
      EXPECT_EQ(values(dh), values(h)) << where;
      EXPECT_EQ(values(g), values(dg)) << where;
      EXPECT_EQ(values(u), values(du)) << where;
    }
  }
}

// The stacked form against the two-tensor ops on the same values: the same bits, on the 16-byte
// path (F % 8 == 0), the scalar path (F % 8 != 0) and one element off alignment; in place.
TEST_F(CudaSwiglu, StackedEqualsTwoTensorForm) {
  uint64_t seed = 90;
  for (DType dtype : {DType::kF32, DType::kBF16}) {
    for (const auto& [rows, F] :
         {std::pair<int64_t, int64_t>{37, 64}, {37, 2048}, {37, 13}, {1, 12}, {1, 4}, {1, 64}}) {
      for (const bool misaligned : {false, true}) {
        const Shape stacked{rows, 2 * F}, half{rows, F};
        const MisalignedGpu gu_m = random_gpu_misaligned(stacked, dtype, seed++, 0.f, 3.f);
        const Tensor gu_a = random_gpu(stacked, dtype, seed++, 0.f, 3.f);
        const TensorView gu = misaligned ? gu_m.view : gu_a.view();
        const Tensor dh = random_gpu(half, dtype, seed++);
        // The two halves as separate tensors, row by row.
        const Tensor g = Tensor::empty(half, dtype, kGpu), u = Tensor::empty(half, dtype, kGpu);
        for (int64_t r = 0; r < rows; ++r) {
          copy(gu.flat_range(r * 2 * F, Shape{F}), g.view().flat_range(r * F, Shape{F}));
          copy(gu.flat_range(r * 2 * F + F, Shape{F}), u.view().flat_range(r * F, Shape{F}));
        }
        const Tensor h = Tensor::empty(half, dtype, kGpu), h2 = Tensor::empty(half, dtype, kGpu);
        ops::cuda::swiglu_forward(g, u, h);
        ops::cuda::swiglu_stacked_forward(gu, h2);
        const std::string where =
            ::memento::detail::concat(dtype_name(dtype), " F=", F, misaligned ? " misaligned" : "");
        EXPECT_EQ(values(h2), values(h)) << "forward " << where;
        ops::cuda::swiglu_backward(dh, g, u, g, u);
        const TensorView in_place = dh;
        ops::cuda::swiglu_stacked_backward(dh, gu, gu, &in_place);
        EXPECT_EQ(values(dh), values(h)) << "rebuilt h " << where;
        const std::vector<double> grads = values(gu), dg = values(g), du = values(u);
        bool same = true;
        for (int64_t r = 0; r < rows && same; ++r)
          for (int64_t f = 0; f < F; ++f) {
            const auto s = static_cast<size_t>(r * 2 * F + f), t = static_cast<size_t>(r * F + f);
            same = same && grads[s] == dg[t] && grads[s + static_cast<size_t>(F)] == du[t];
          }
        EXPECT_TRUE(same) << "backward " << where;
      }
    }
  }
}

TEST_F(CudaSwiglu, RejectsMismatchedShapes) {
  const Tensor g = random_gpu(Shape{4, 8}, DType::kF32, 1);
  const Tensor u = random_gpu(Shape{4, 9}, DType::kF32, 2);
  EXPECT_THROW(ops::cuda::swiglu_forward(g, u, Tensor::empty(Shape{4, 8}, DType::kF32, kGpu)),
               ShapeError);
}

}  // namespace
}  // namespace memento::testing
