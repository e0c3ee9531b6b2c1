#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <string>

#include "core/ops/swiglu.h"
#include "testing/gradcheck.h"

namespace memento {
namespace {

using testing::random_tensor;

double silu(double g) { return g / (1 + std::exp(-g)); }

double at(const TensorView& t, int64_t i) {
  return t.dtype() == DType::kF32 ? t.data<float>()[i] : t.data<double>()[i];
}

void check_forward(DType dtype, double tol) {
  const Shape shape{2, 3, 17};  // (B, T, F)
  const Tensor g = random_tensor(shape, dtype, 1, 3.0), u = random_tensor(shape, dtype, 2);
  const Tensor h = Tensor::empty(shape, dtype);
  ops::swiglu_forward(g, u, h);
  for (int64_t i = 0; i < g.numel(); ++i) {
    const double expected = silu(at(g, i)) * at(u, i);
    ASSERT_NEAR(at(h, i), expected, tol * (1 + std::fabs(expected))) << i;
  }
}

TEST(OpsSwiGLU, ForwardMatchesReferenceF64) { check_forward(DType::kF64, 1e-14); }
TEST(OpsSwiGLU, ForwardMatchesReferenceF32) { check_forward(DType::kF32, 1e-6); }

// Central differences of h = silu(g) u in fp64, element by element (the op is elementwise).
TEST(OpsSwiGLU, BackwardMatchesFiniteDifferences) {
  const Shape shape{4, 25};
  const Tensor g = random_tensor(shape, DType::kF64, 3, 3.0),
               u = random_tensor(shape, DType::kF64, 4);
  const Tensor dh = random_tensor(shape, DType::kF64, 5);
  const Tensor dg = Tensor::empty(shape, DType::kF64), du = Tensor::empty(shape, DType::kF64);
  ops::swiglu_backward(dh, g, u, dg, du);
  constexpr double kStep = 1e-6;
  for (int64_t i = 0; i < g.numel(); ++i) {
    const double gi = at(g, i), ui = at(u, i), d = at(dh, i);
    const double num_g = d * ui * (silu(gi + kStep) - silu(gi - kStep)) / (2 * kStep);
    const double num_u = d * silu(gi);
    EXPECT_NEAR(at(dg, i), num_g, 1e-8 * (1 + std::fabs(num_g))) << i;
    EXPECT_NEAR(at(du, i), num_u, 1e-12 * (1 + std::fabs(num_u))) << i;
  }
}

TEST(OpsSwiGLU, InPlaceBackwardEqualsOutOfPlace) {
  const Shape shape{3, 40};
  const Tensor g = random_tensor(shape, DType::kF32, 6), u = random_tensor(shape, DType::kF32, 7);
  const Tensor dh = random_tensor(shape, DType::kF32, 8);
  const Tensor dg = Tensor::empty(shape, DType::kF32), du = Tensor::empty(shape, DType::kF32);
  ops::swiglu_backward(dh, g, u, dg, du);
  ops::swiglu_backward(dh, g, u, g, u);  // overwrites g and u with their gradients
  EXPECT_EQ(std::memcmp(g.data<float>(), dg.data<float>(), dg.bytes()), 0);
  EXPECT_EQ(std::memcmp(u.data<float>(), du.data<float>(), du.bytes()), 0);
}

// The backward's rebuilt h is the forward's h bit for bit, also written over dh in place.
TEST(OpsSwiGLU, BackwardRebuildsForwardOutputInPlace) {
  for (DType dtype : {DType::kF32, DType::kF64}) {
    const Shape shape{5, 33};
    const Tensor g = random_tensor(shape, dtype, 11, 3.0), u = random_tensor(shape, dtype, 12);
    const Tensor dh = random_tensor(shape, dtype, 13);
    const Tensor h = Tensor::empty(shape, dtype);
    ops::swiglu_forward(g, u, h);
    const Tensor dg = Tensor::empty(shape, dtype), du = Tensor::empty(shape, dtype);
    ops::swiglu_backward(dh, g, u, dg, du);  // without h
    const TensorView in_place = dh;
    ops::swiglu_backward(dh, g, u, g, u, &in_place);  // g, u, dh become dg, du, h
    EXPECT_EQ(std::memcmp(dh.view().raw(), h.view().raw(), h.bytes()), 0) << dtype_name(dtype);
    EXPECT_EQ(std::memcmp(g.view().raw(), dg.view().raw(), dg.bytes()), 0) << dtype_name(dtype);
    EXPECT_EQ(std::memcmp(u.view().raw(), du.view().raw(), du.bytes()), 0) << dtype_name(dtype);
  }
  const Tensor a = Tensor::zeros(Shape{2, 8}, DType::kF32);
  const TensorView wrong = Tensor::zeros(Shape{2, 7}, DType::kF32);
  try {
    ops::swiglu_backward(a, a, a, a, a, &wrong);
    ADD_FAILURE() << "no ShapeError";
  } catch (const ShapeError& e) {
    EXPECT_NE(std::string(e.what()).find("swiglu_backward: h"), std::string::npos) << e.what();
  }
}

// The stacked form ([g | u] in one (..., 2F) tensor) gives the two-tensor ops' bits, in place too.
TEST(OpsSwiGLU, StackedEqualsTwoTensorForm) {
  for (DType dtype : {DType::kF32, DType::kF64}) {
    const int64_t rows = 7, F = 13;
    const Tensor gu = random_tensor(Shape{rows, 2 * F}, dtype, 21, 2.0);
    const Tensor dh = random_tensor(Shape{rows, F}, dtype, 22);
    const Tensor g = Tensor::empty(Shape{rows, F}, dtype), u = Tensor::empty(Shape{rows, F}, dtype);
    for (int64_t r = 0; r < rows; ++r) {
      copy(gu.view().flat_range(r * 2 * F, Shape{F}), g.view().flat_range(r * F, Shape{F}));
      copy(gu.view().flat_range(r * 2 * F + F, Shape{F}), u.view().flat_range(r * F, Shape{F}));
    }
    const Tensor h = Tensor::empty(Shape{rows, F}, dtype),
                 h2 = Tensor::empty(Shape{rows, F}, dtype);
    ops::swiglu_forward(g, u, h);
    ops::swiglu_stacked_forward(gu, h2);
    EXPECT_EQ(std::memcmp(h.view().raw(), h2.view().raw(), h.bytes()), 0) << dtype_name(dtype);
    ops::swiglu_backward(dh, g, u, g, u);  // g, u become dg, du
    const TensorView in_place = dh;
    ops::swiglu_stacked_backward(dh, gu, gu, &in_place);  // gu becomes [dg | du], dh becomes h
    EXPECT_EQ(std::memcmp(dh.view().raw(), h.view().raw(), h.bytes()), 0);
    for (int64_t r = 0; r < rows; ++r) {
      const size_t row = static_cast<size_t>(F) * dtype_size(dtype);
      const auto* stacked = static_cast<const char*>(gu.view().raw()) + 2 * r * row;
      EXPECT_EQ(std::memcmp(stacked, static_cast<const char*>(g.view().raw()) + r * row, row), 0);
      EXPECT_EQ(std::memcmp(stacked + row, static_cast<const char*>(u.view().raw()) + r * row, row),
                0);
    }
  }
  const Tensor odd = Tensor::zeros(Shape{2, 7}, DType::kF32);
  EXPECT_THROW(ops::swiglu_stacked_forward(odd, Tensor::zeros(Shape{2, 3}, DType::kF32)),
               ShapeError);
  EXPECT_THROW(ops::swiglu_stacked_forward(Tensor::zeros(Shape{2, 8}, DType::kF32),
                                           Tensor::zeros(Shape{2, 5}, DType::kF32)),
               ShapeError);
}

TEST(OpsSwiGLU, ExtremeGatesStayFinite) {
  const Tensor g = Tensor::empty(Shape{4}, DType::kF32), u = Tensor::empty(Shape{4}, DType::kF32);
  const float gs[4] = {-1000.0f, -90.0f, 90.0f, 1000.0f};
  for (int i = 0; i < 4; ++i) g.data<float>()[i] = gs[i], u.data<float>()[i] = 1.0f;
  const Tensor h = Tensor::empty_like(g), dg = Tensor::empty_like(g), du = Tensor::empty_like(g);
  ops::swiglu_forward(g, u, h);
  ops::swiglu_backward(u, g, u, dg, du);
  for (int i = 0; i < 4; ++i) {
    EXPECT_TRUE(std::isfinite(h.data<float>()[i])) << gs[i];
    EXPECT_TRUE(std::isfinite(dg.data<float>()[i])) << gs[i];
    EXPECT_TRUE(std::isfinite(du.data<float>()[i])) << gs[i];
  }
  EXPECT_EQ(h.data<float>()[0], 0.0f);
  EXPECT_EQ(h.data<float>()[3], 1000.0f);
}

TEST(OpsSwiGLU, MetaAndShapeErrors) {
  const Tensor m = Tensor::empty(Shape{2, 3, 8}, DType::kF32, Device::meta());
  ops::swiglu_forward(m, m, m);
  ops::swiglu_backward(m, m, m, m, m);
  const Tensor a = Tensor::zeros(Shape{2, 8}, DType::kF32),
               b = Tensor::zeros(Shape{2, 7}, DType::kF32);
  try {
    ops::swiglu_forward(a, b, a);
    ADD_FAILURE() << "no ShapeError";
  } catch (const ShapeError& e) {
    EXPECT_NE(std::string(e.what()).find("swiglu_forward: u: expected shape [2, 8]"),
              std::string::npos)
        << e.what();
  }
  EXPECT_THROW(ops::swiglu_backward(a, a, a, a, b), ShapeError);
  const Tensor h = Tensor::zeros(Shape{2, 8}, DType::kBF16);
  EXPECT_THROW(ops::swiglu_forward(h, h, h), ShapeError);
}

}  // namespace
}  // namespace memento
