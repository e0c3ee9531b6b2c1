#include "optim/grad_clip.h"

#include <gtest/gtest.h>
#include <omp.h>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "core/error.h"

namespace memento::optim {
namespace {

// sqrt(sum x^2) in long double (64-bit mantissa on x86-64): the reference norm.
template <typename T>
double reference_norm(const std::vector<T>& x) {
  long double s = 0;
  for (T v : x) s += static_cast<long double>(v) * static_cast<long double>(v);
  return static_cast<double>(std::sqrt(s));
}

template <typename T>
Tensor tensor_of(const std::vector<T>& x) {
  Tensor t = Tensor::empty(Shape{static_cast<int64_t>(x.size())}, DTypeOf<T>::value);
  std::memcpy(t.view().raw(), x.data(), x.size() * sizeof(T));
  return t;
}

template <typename T>
std::vector<T> random_vector(size_t n, uint32_t seed, double scale) {
  std::mt19937 gen(seed);
  std::normal_distribution<double> dist(0.0, scale);
  std::vector<T> x(n);
  for (T& v : x) v = static_cast<T>(dist(gen));
  return x;
}

TEST(GlobalGradNorm, SmallExactCases) {
  EXPECT_EQ(global_grad_norm(tensor_of(std::vector<float>{3, 4})), 5.0);
  EXPECT_EQ(global_grad_norm(tensor_of(std::vector<double>{-2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0})),
            2.0);
  EXPECT_EQ(global_grad_norm(tensor_of(std::vector<float>(1000, 0.0f))), 0.0);
  // 17 ones: a tail after the 8-wide lanes, and fewer items than blocks.
  EXPECT_NEAR(global_grad_norm(tensor_of(std::vector<double>(17, 1.0))), std::sqrt(17.0), 1e-15);
}

TEST(GlobalGradNorm, MatchesALongDoubleReference) {
  for (size_t n : {1ul, 7ul, 255ul, 256ul, 257ul, 100003ul}) {
    const auto f = random_vector<float>(n, static_cast<uint32_t>(n), 1e-2);
    const auto d = random_vector<double>(n, static_cast<uint32_t>(n) + 1, 3.0);
    EXPECT_NEAR(global_grad_norm(tensor_of(f)), reference_norm(f), 1e-13 * reference_norm(f)) << n;
    EXPECT_NEAR(global_grad_norm(tensor_of(d)), reference_norm(d), 1e-13 * reference_norm(d)) << n;
  }
  // Accumulated in fp64: float squares that would overflow or underflow in fp32 do not.
  const std::vector<float> big = {3e30f, 4e30f};
  EXPECT_NEAR(global_grad_norm(tensor_of(big)), reference_norm(big), 1e-15 * reference_norm(big));
  EXPECT_NEAR(global_grad_norm(tensor_of(big)), 5e30, 1e-7 * 5e30);
  const std::vector<float> tiny = {3e-30f, 4e-30f};
  EXPECT_NEAR(global_grad_norm(tensor_of(tiny)), reference_norm(tiny),
              1e-15 * reference_norm(tiny));
  EXPECT_NEAR(global_grad_norm(tensor_of(tiny)), 5e-30, 1e-7 * 5e-30);
}

TEST(GlobalGradNorm, BitIdenticalForAnyThreadCount) {
  const auto x = random_vector<float>(300007, 9, 1.0);
  const Tensor t = tensor_of(x);
  const int saved = omp_get_max_threads();
  omp_set_num_threads(1);
  const double one = global_grad_norm(t);
  for (int threads : {2, 3, 4, 7}) {
    omp_set_num_threads(threads);
    EXPECT_EQ(global_grad_norm(t), one) << threads << " threads";
  }
  omp_set_num_threads(saved);
}

TEST(GlobalGradNorm, RejectsNonFloatGradients) {
  const Tensor bf16 = Tensor::zeros(Shape{4}, DType::kBF16);
  EXPECT_THROW(global_grad_norm(bf16), ShapeError);
}

TEST(ClipGradNorm, ScalesDownToMaxNorm) {
  for (double max_norm : {1.0, 0.25}) {
    auto x = random_vector<float>(5000, 4, 1.0);
    const Tensor t = tensor_of(x);
    const double norm = global_grad_norm(t);
    ASSERT_GT(norm, 10.0);
    const double factor = clip_grad_norm(t, norm, max_norm);
    EXPECT_NEAR(factor, max_norm / norm, 1e-6 * max_norm / norm);
    EXPECT_LE(factor, max_norm / norm);  // never leaves the norm above max_norm
    const double after = global_grad_norm(t);
    EXPECT_NEAR(after, max_norm, 1e-5 * max_norm);
    // Every element scaled by the same factor.
    const float* g = t.data<float>();
    for (size_t i = 0; i < x.size(); ++i)
      ASSERT_NEAR(g[i], x[i] * factor, 1e-6 * std::fabs(x[i] * factor) + 1e-30) << i;
  }
  auto d = random_vector<double>(1000, 5, 2.0);
  const Tensor t = tensor_of(d);
  const double norm = global_grad_norm(t);
  const double factor = clip_grad_norm(t, norm, 1.0);
  EXPECT_NEAR(global_grad_norm(t), 1.0, 1e-6);
  for (size_t i = 0; i < d.size(); ++i) ASSERT_DOUBLE_EQ(t.data<double>()[i], d[i] * factor);
}

TEST(ClipGradNorm, LeavesSmallOrUnclippedGradientsAlone) {
  const auto x = random_vector<float>(1000, 6, 1e-3);
  const Tensor t = tensor_of(x);
  const double norm = global_grad_norm(t);
  ASSERT_LT(norm, 1.0);
  EXPECT_EQ(clip_grad_norm(t, norm, 1.0), 1.0);
  EXPECT_EQ(clip_grad_norm(t, 1.0, 1.0), 1.0);   // exactly at the limit: not clipped
  EXPECT_EQ(clip_grad_norm(t, 50.0, 0.0), 1.0);  // max_norm <= 0 disables clipping
  EXPECT_EQ(clip_grad_norm(t, 50.0, -1.0), 1.0);
  EXPECT_EQ(std::memcmp(t.view().raw(), x.data(), x.size() * sizeof(float)), 0);
}

TEST(ClipGradNorm, UsesTheGivenNorm) {
  // The caller passes the norm (all-reduced over ranks in a parallel run): clipping uses it, not
  // the local gradients' norm.
  const Tensor t = tensor_of(std::vector<double>{3, 4});  // local norm 5
  const double factor = clip_grad_norm(t, 20.0, 2.0);
  EXPECT_NEAR(factor, 0.1, 1e-7);
  EXPECT_NEAR(t.data<double>()[0], 0.3, 1e-7);
  EXPECT_NEAR(t.data<double>()[1], 0.4, 1e-7);
}

TEST(ClipGradNorm, MetaGradientsAreSkipped) {
  const Tensor m = Tensor::empty(Shape{1 << 20}, DType::kF32, Device::meta());
  EXPECT_EQ(global_grad_norm(m), 0.0);
  EXPECT_NO_FATAL_FAILURE(clip_grad_norm(m, 10.0, 1.0));
}

}  // namespace
}  // namespace memento::optim
