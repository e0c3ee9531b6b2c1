#include <gtest/gtest.h>
#include <omp.h>

#include <cmath>
#include <string>

#include "core/ops/elementwise.h"
#include "testing/expect_error.h"
#include "testing/gradcheck.h"

namespace memento {
namespace {

using testing::random_tensor;

using testing::expect_shape_error;

template <typename T>
void check_add_and_scale(DType dtype) {
  const Tensor acc = random_tensor(Shape{3, 7, 11}, dtype, 1);
  const Tensor x = random_tensor(Shape{3, 7, 11}, dtype, 2);
  const Tensor before = random_tensor(Shape{3, 7, 11}, dtype, 1);
  ops::add_(acc, x);
  for (int64_t i = 0; i < acc.numel(); ++i)
    ASSERT_EQ(acc.data<T>()[i], before.data<T>()[i] + x.data<T>()[i]) << i;
  ops::scale_(acc, 0.5);
  for (int64_t i = 0; i < acc.numel(); ++i)
    ASSERT_EQ(acc.data<T>()[i], (before.data<T>()[i] + x.data<T>()[i]) * T(0.5)) << i;
}

TEST(OpsElementwise, AddAndScaleF32) { check_add_and_scale<float>(DType::kF32); }
TEST(OpsElementwise, AddAndScaleF64) { check_add_and_scale<double>(DType::kF64); }

TEST(OpsElementwise, SumOfSquaresMatchesReference) {
  for (DType dtype : {DType::kF32, DType::kF64}) {
    for (int64_t n : {0, 1, 7, 1000, 100003}) {
      const Tensor x = random_tensor(Shape{n}, dtype, 3);
      long double ref = 0;
      for (int64_t i = 0; i < n; ++i) {
        const long double v = dtype == DType::kF32 ? x.data<float>()[i] : x.data<double>()[i];
        ref += v * v;
      }
      EXPECT_NEAR(ops::sum_of_squares(x), static_cast<double>(ref), 1e-12 * (1 + ref))
          << dtype_name(dtype) << " n=" << n;
    }
  }
}

TEST(OpsElementwise, SumOfSquaresIsTheSameForAnyThreadCount) {
  const Tensor x = random_tensor(Shape{250001}, DType::kF32, 4);
  const int threads = omp_get_max_threads();
  omp_set_num_threads(1);
  const double one = ops::sum_of_squares(x);
  omp_set_num_threads(3);
  const double three = ops::sum_of_squares(x);
  omp_set_num_threads(threads);
  const double again = ops::sum_of_squares(x);
  EXPECT_EQ(one, three);
  EXPECT_EQ(one, again);
}

TEST(OpsElementwise, MetaTensorsAreSkipped) {
  const Tensor a = Tensor::empty(Shape{4, 5}, DType::kF32, Device::meta());
  const Tensor b = Tensor::empty(Shape{4, 5}, DType::kF32, Device::meta());
  ops::add_(a, b);
  ops::scale_(a, 2.0);
  EXPECT_EQ(ops::sum_of_squares(a), 0.0);
  expect_shape_error(
      [&] {
        ops::add_(a, Tensor::empty(Shape{5, 4}, DType::kF32, Device::meta()));
      },
      "add_");
}

TEST(OpsElementwise, ShapeAndDTypeErrorsNameTheOp) {
  const Tensor a = Tensor::zeros(Shape{4, 5}, DType::kF32);
  expect_shape_error([&] { ops::add_(a, Tensor::zeros(Shape{4, 6}, DType::kF32)); }, "add_");
  expect_shape_error([&] { ops::add_(a, Tensor::zeros(Shape{4, 5}, DType::kF64)); }, "add_");
  const Tensor h = Tensor::zeros(Shape{4}, DType::kBF16);
  expect_shape_error([&] { ops::add_(h, h); }, "add_");
  expect_shape_error([&] { ops::scale_(h, 2.0); }, "scale_");
  expect_shape_error([&] { ops::sum_of_squares(h); }, "sum_of_squares");
}

}  // namespace
}  // namespace memento
