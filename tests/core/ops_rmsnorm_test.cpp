#include <gtest/gtest.h>
#include <omp.h>

#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "core/ops/elementwise.h"
#include "core/ops/rmsnorm.h"
#include "testing/expect_error.h"
#include "testing/gradcheck.h"

namespace memento {
namespace {

using testing::random_tensor;

using testing::expect_shape_error;

bool same_bits(const TensorView& a, const TensorView& b) {
  return a.bytes() == b.bytes() && std::memcmp(a.raw(), b.raw(), a.bytes()) == 0;
}

double at(const TensorView& t, int64_t i) {
  return t.dtype() == DType::kF32 ? t.data<float>()[i] : t.data<double>()[i];
}

// Straightforward loops in fp64: y, rstd, dx and dw (dw without what was already there).
struct Reference {
  std::vector<double> y, rstd, dx, dw;
};
Reference reference(const TensorView& x, const TensorView& w, const TensorView& dy, double eps) {
  const int64_t C = x.size(-1), rows = x.numel() / C;
  Reference r{std::vector<double>(x.numel()), std::vector<double>(rows),
              std::vector<double>(x.numel()), std::vector<double>(C, 0.0)};
  for (int64_t n = 0; n < rows; ++n) {
    double ms = 0, dot = 0;
    for (int64_t c = 0; c < C; ++c) ms += at(x, n * C + c) * at(x, n * C + c);
    const double s = 1 / std::sqrt(ms / C + eps);
    r.rstd[n] = s;
    for (int64_t c = 0; c < C; ++c) {
      const double xi = at(x, n * C + c), g = at(dy, n * C + c) * at(w, c);
      r.y[n * C + c] = xi * s * at(w, c);
      r.dw[c] += at(dy, n * C + c) * xi * s;
      dot += g * xi;
    }
    for (int64_t c = 0; c < C; ++c)
      r.dx[n * C + c] = s * at(dy, n * C + c) * at(w, c) - s * s * s * dot / C * at(x, n * C + c);
  }
  return r;
}

void check_against_reference(DType dtype, double tol) {
  const Shape shape{3, 5, 37};  // (B, T, C)
  const Tensor x = random_tensor(shape, dtype, 1, 2.0);
  const Tensor w = random_tensor(Shape{37}, dtype, 2);
  const Tensor dy = random_tensor(shape, dtype, 3);
  const Tensor dw = random_tensor(Shape{37}, dtype, 4);  // backward adds to this
  const Tensor dw_before = random_tensor(Shape{37}, dtype, 4);
  const Tensor y = Tensor::empty(shape, dtype), dx = Tensor::empty(shape, dtype);
  const Tensor rstd = Tensor::empty(Shape{15}, dtype);
  ops::rmsnorm_forward(x, w, 1e-5, y, rstd);
  ops::rmsnorm_backward(dy, x, w, rstd, dx, dw);
  const Reference r = reference(x, w, dy, 1e-5);
  for (int64_t i = 0; i < x.numel(); ++i) {
    ASSERT_NEAR(at(y, i), r.y[i], tol * (1 + std::fabs(r.y[i]))) << "y " << i;
    ASSERT_NEAR(at(dx, i), r.dx[i], tol * (1 + std::fabs(r.dx[i]))) << "dx " << i;
  }
  for (int64_t n = 0; n < 15; ++n) ASSERT_NEAR(at(rstd, n), r.rstd[n], tol * r.rstd[n]) << n;
  for (int64_t c = 0; c < 37; ++c) {
    const double expected = at(dw_before, c) + r.dw[c];
    ASSERT_NEAR(at(dw, c), expected, tol * (1 + std::fabs(expected))) << "dw " << c;
  }
}

TEST(OpsRMSNorm, MatchesReferenceF64) { check_against_reference(DType::kF64, 1e-12); }
TEST(OpsRMSNorm, MatchesReferenceF32) { check_against_reference(DType::kF32, 2e-5); }

TEST(OpsRMSNorm, BitIdenticalForAnyThreadCount) {
  const Shape shape{4, 33, 200};
  const Tensor x = random_tensor(shape, DType::kF32, 5);
  const Tensor w = random_tensor(Shape{200}, DType::kF32, 6);
  const Tensor dy = random_tensor(shape, DType::kF32, 7);
  auto run = [&](int threads) {
    omp_set_num_threads(threads);
    std::vector<Tensor> out{
        Tensor::empty(shape, DType::kF32), Tensor::empty(Shape{132}, DType::kF32),
        Tensor::empty(shape, DType::kF32), Tensor::zeros(Shape{200}, DType::kF32)};
    ops::rmsnorm_forward(x, w, 1e-6, out[0], out[1]);
    ops::rmsnorm_backward(dy, x, w, out[1], out[2], out[3]);
    return out;
  };
  const int threads = omp_get_max_threads();
  const auto a = run(1), b = run(3), c = run(threads);
  omp_set_num_threads(threads);
  for (size_t k = 0; k < a.size(); ++k) {
    EXPECT_TRUE(same_bits(a[k], b[k])) << "output " << k;
    EXPECT_TRUE(same_bits(a[k], c[k])) << "output " << k;
  }
}

// The residual add fused into the forward: x becomes x + residual and y its norm, the same bits as
// add_ then the norm.
TEST(OpsRMSNorm, ForwardWithResidualEqualsAddThenForward) {
  for (DType dtype : {DType::kF32, DType::kF64}) {
    const Shape s{23, 17};
    const Tensor x = testing::random_tensor(s, dtype, 1), r = testing::random_tensor(s, dtype, 2);
    const Tensor w = testing::random_tensor(Shape{17}, dtype, 3);
    const Tensor sum = Tensor::empty(s, dtype);
    copy(x, sum);
    ops::add_(sum, r);
    const Tensor y = Tensor::empty(s, dtype), rstd = Tensor::empty(Shape{23}, dtype);
    ops::rmsnorm_forward(sum, w, 1e-5, y, rstd);
    const Tensor y2 = Tensor::empty(s, dtype), rstd2 = Tensor::empty(Shape{23}, dtype);
    const TensorView residual = r;
    ops::rmsnorm_forward(x, w, 1e-5, y2, rstd2, &residual);
    EXPECT_EQ(std::memcmp(x.view().raw(), sum.view().raw(), sum.bytes()), 0) << dtype_name(dtype);
    EXPECT_EQ(std::memcmp(y2.view().raw(), y.view().raw(), y.bytes()), 0);
    EXPECT_EQ(std::memcmp(rstd2.view().raw(), rstd.view().raw(), rstd.bytes()), 0);
    expect_shape_error(
        [&] {
          const TensorView wrong = Tensor::zeros(Shape{23, 16}, dtype);
          ops::rmsnorm_forward(x, w, 1e-5, y2, rstd2, &wrong);
        },
        "rmsnorm_forward: residual");
  }
}

// The residual summed inside the backward equals a separate add, bit for bit, in fp32 and fp64.
TEST(OpsRMSNorm, BackwardWithResidualEqualsBackwardThenAdd) {
  for (DType dtype : {DType::kF32, DType::kF64}) {
    const Shape s{37, 19};
    const Tensor x = testing::random_tensor(s, dtype, 1), dy = testing::random_tensor(s, dtype, 2);
    const Tensor r = testing::random_tensor(s, dtype, 3);
    const Tensor w = testing::random_tensor(Shape{19}, dtype, 4);
    const Tensor y = Tensor::empty(s, dtype), rstd = Tensor::empty(Shape{37}, dtype);
    ops::rmsnorm_forward(x, w, 1e-5, y, rstd);
    const Tensor dx = Tensor::empty(s, dtype), dw = Tensor::zeros(Shape{19}, dtype);
    ops::rmsnorm_backward(dy, x, w, rstd, dx, dw);
    ops::add_(dx, r);
    const Tensor fused = Tensor::empty(s, dtype), dw_fused = Tensor::zeros(Shape{19}, dtype);
    const TensorView residual = r;
    ops::rmsnorm_backward(dy, x, w, rstd, fused, dw_fused, &residual);
    EXPECT_EQ(std::memcmp(fused.view().raw(), dx.view().raw(), dx.bytes()), 0) << dtype_name(dtype);
    EXPECT_EQ(std::memcmp(dw_fused.view().raw(), dw.view().raw(), dw.bytes()), 0);
    expect_shape_error(
        [&] {
          const TensorView wrong = Tensor::zeros(Shape{37, 18}, dtype);
          ops::rmsnorm_backward(dy, x, w, rstd, fused, dw_fused, &wrong);
        },
        "rmsnorm_backward: residual");
  }
}

TEST(OpsRMSNorm, MetaTensorsCheckShapesAndSkipCompute) {
  const Device meta = Device::meta();
  const Tensor x = Tensor::empty(Shape{2, 3, 8}, DType::kF32, meta);
  const Tensor w = Tensor::empty(Shape{8}, DType::kF32, meta);
  const Tensor y = Tensor::empty(Shape{2, 3, 8}, DType::kF32, meta);
  const Tensor rstd = Tensor::empty(Shape{6}, DType::kF32, meta);
  ops::rmsnorm_forward(x, w, 1e-5, y, rstd);
  ops::rmsnorm_backward(y, x, w, rstd, y, w);
  const TensorView residual = x;
  ops::rmsnorm_backward(y, x, w, rstd, y, w, &residual);
  expect_shape_error([&] { ops::rmsnorm_forward(x, w, 1e-5, y, w); }, "rmsnorm_forward: rstd");
}

TEST(OpsRMSNorm, ShapeErrorsNameTheOpAndTensor) {
  const Tensor x = Tensor::zeros(Shape{2, 3, 8}, DType::kF32);
  const Tensor y = Tensor::zeros(Shape{2, 3, 8}, DType::kF32);
  const Tensor rstd = Tensor::zeros(Shape{6}, DType::kF32);
  expect_shape_error(
      [&] { ops::rmsnorm_forward(x, Tensor::zeros(Shape{7}, DType::kF32), 1e-5, y, rstd); },
      "rmsnorm_forward: weight: expected shape [8]");
  const Tensor w = Tensor::zeros(Shape{8}, DType::kF32);
  expect_shape_error(
      [&] {
        ops::rmsnorm_backward(Tensor::zeros(Shape{2, 8}, DType::kF32), x, w, rstd, y, w);
      },
      "rmsnorm_backward: dy");
  expect_shape_error(
      [&] { ops::rmsnorm_forward(x, Tensor::zeros(Shape{8}, DType::kF64), 1e-5, y, rstd); },
      "rmsnorm_forward: weight: expected dtype f32");
  const Tensor h = Tensor::zeros(Shape{2, 8}, DType::kBF16);
  const Tensor hw = Tensor::zeros(Shape{8}, DType::kBF16);
  const Tensor hr = Tensor::zeros(Shape{2}, DType::kBF16);
  expect_shape_error([&] { ops::rmsnorm_forward(h, hw, 1e-5, h, hr); }, "rmsnorm_forward");
}

}  // namespace
}  // namespace memento
