#include <gtest/gtest.h>
#include <omp.h>

#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "core/ops/cross_entropy.h"
#include "testing/gradcheck.h"

namespace memento {
namespace {

using testing::random_tensor;

Tensor targets_of(const std::vector<int32_t>& ids) {
  Tensor t = Tensor::empty(Shape{static_cast<int64_t>(ids.size())}, DType::kI32);
  std::memcpy(t.data<int32_t>(), ids.data(), ids.size() * sizeof(int32_t));
  return t;
}

double at(const TensorView& t, int64_t i) {
  return t.dtype() == DType::kF32 ? t.data<float>()[i] : t.data<double>()[i];
}

void check_against_reference(DType dtype, double tol) {
  const int64_t N = 6, V = 29;
  const std::vector<int32_t> ids = {0, 28, -1, 5, -100, 17};
  const Tensor logits = random_tensor(Shape{N, V}, dtype, 1, 3.0);
  const Tensor dlogits = Tensor::empty(Shape{N, V}, dtype);
  const double scale = 0.25;
  const auto r = ops::cross_entropy(logits, targets_of(ids), dlogits, scale);
  EXPECT_EQ(r.count, 4);
  long double loss = 0;
  for (int64_t n = 0; n < N; ++n) {
    if (ids[n] < 0) {
      for (int64_t v = 0; v < V; ++v) ASSERT_EQ(at(dlogits, n * V + v), 0.0) << n;
      continue;
    }
    long double z = 0;
    for (int64_t v = 0; v < V; ++v) z += std::exp(static_cast<long double>(at(logits, n * V + v)));
    loss += std::log(z) - at(logits, n * V + ids[n]);
    for (int64_t v = 0; v < V; ++v) {
      const double p =
          static_cast<double>(std::exp(static_cast<long double>(at(logits, n * V + v))) / z);
      const double expected = (p - (v == ids[n] ? 1.0 : 0.0)) * scale;
      ASSERT_NEAR(at(dlogits, n * V + v), expected, tol) << n << ", " << v;
    }
  }
  EXPECT_NEAR(r.loss_sum, static_cast<double>(loss), tol * 10);
  // Without dlogits only the loss is computed.
  const auto r2 = ops::cross_entropy(logits, targets_of(ids), TensorView(), 1.0);
  EXPECT_EQ(r2.count, 4);
  EXPECT_NEAR(r2.loss_sum, static_cast<double>(loss), tol * 10);
}

TEST(OpsCrossEntropy, MatchesReferenceF64) { check_against_reference(DType::kF64, 1e-13); }
TEST(OpsCrossEntropy, MatchesReferenceF32) { check_against_reference(DType::kF32, 1e-6); }

TEST(OpsCrossEntropy, GradientMatchesFiniteDifferences) {
  ParameterSet none;
  none.allocate(DType::kF64);
  const int64_t N = 5, V = 11;
  const Tensor logits = random_tensor(Shape{N, V}, DType::kF64, 2, 2.0);
  const Tensor targets = targets_of({3, -1, 10, 0, 7});
  const double mean = 1.0 / 4;  // 4 counted rows
  testing::GradCheckCase c;
  c.params = &none;
  c.inputs = {logits};
  c.input_names = {"logits"};
  c.forward = [&](LayerContext&) {
    Tensor loss = Tensor::empty(Shape{1}, DType::kF64);
    loss.data<double>()[0] = ops::cross_entropy(logits, targets, TensorView(), 1.0).loss_sum * mean;
    return loss;
  };
  c.backward = [&](LayerContext&, const Tensor& dout) {
    Tensor d = Tensor::empty(Shape{N, V}, DType::kF64);
    ops::cross_entropy(logits, targets, d, dout.data<double>()[0] * mean);
    return std::vector<Tensor>{d};
  };
  c.max_elements_per_tensor = N * V;
  testing::expect_gradients_match(c);
}

TEST(OpsCrossEntropy, InPlaceEqualsOutOfPlace) {
  const Tensor logits = random_tensor(Shape{7, 300}, DType::kF32, 3, 4.0);
  const Tensor targets = targets_of({1, 299, 0, -1, 42, 150, 7});
  const Tensor d = Tensor::empty(Shape{7, 300}, DType::kF32);
  const auto a = ops::cross_entropy(logits, targets, d, 0.5);
  const auto b = ops::cross_entropy(logits, targets, logits, 0.5);  // dlogits aliases logits
  EXPECT_EQ(a.loss_sum, b.loss_sum);
  EXPECT_EQ(std::memcmp(d.data<float>(), logits.data<float>(), d.bytes()), 0);
}

TEST(OpsCrossEntropy, BitIdenticalForAnyThreadCount) {
  const int64_t N = 700, V = 97;
  const Tensor logits = random_tensor(Shape{N, V}, DType::kF32, 4, 3.0);
  std::vector<int32_t> ids(N);
  for (int64_t n = 0; n < N; ++n) ids[n] = n % 13 == 0 ? -1 : static_cast<int32_t>((n * 31) % V);
  const Tensor targets = targets_of(ids);
  auto run = [&](int threads, const Tensor& d) {
    omp_set_num_threads(threads);
    return ops::cross_entropy(logits, targets, d, 1.0 / N).loss_sum;
  };
  const int threads = omp_get_max_threads();
  const Tensor d1 = Tensor::empty(Shape{N, V}, DType::kF32), d3 = Tensor::empty_like(d1);
  const double l1 = run(1, d1), l3 = run(3, d3), l = run(threads, d3);
  omp_set_num_threads(threads);
  EXPECT_EQ(l1, l3);
  EXPECT_EQ(l1, l);
  EXPECT_EQ(std::memcmp(d1.data<float>(), d3.data<float>(), d1.bytes()), 0);
}

TEST(OpsCrossEntropy, LargeLogitsStayFinite) {
  Tensor logits = Tensor::empty(Shape{1, 3}, DType::kF32);
  const float values[3] = {1000.0f, 999.0f, -1000.0f};
  std::memcpy(logits.data<float>(), values, sizeof(values));
  const auto r = ops::cross_entropy(logits, targets_of({1}), logits, 1.0);
  EXPECT_NEAR(r.loss_sum, std::log(1 + std::exp(1.0)), 1e-6);
  for (int v = 0; v < 3; ++v) EXPECT_TRUE(std::isfinite(logits.data<float>()[v]));
}

TEST(OpsCrossEntropy, TargetsPastTheVocabularyAreDataErrors) {
  const Tensor logits = Tensor::zeros(Shape{3, 8}, DType::kF32);
  try {
    ops::cross_entropy(logits, targets_of({1, 2, 8}), TensorView(), 1.0);
    ADD_FAILURE() << "no DataError";
  } catch (const DataError& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("target 8 at row 2"), std::string::npos) << msg;
  }
}

TEST(OpsCrossEntropy, MetaAndShapeErrors) {
  const Device meta = Device::meta();
  const Tensor logits = Tensor::empty(Shape{4, 10}, DType::kF32, meta);
  const Tensor targets = Tensor::empty(Shape{4}, DType::kI32, meta);
  const auto r = ops::cross_entropy(logits, targets, logits, 1.0);
  EXPECT_EQ(r.loss_sum, 0.0);
  try {
    ops::cross_entropy(logits, Tensor::empty(Shape{5}, DType::kI32, meta), TensorView(), 1.0);
    ADD_FAILURE() << "no ShapeError";
  } catch (const ShapeError& e) {
    EXPECT_NE(std::string(e.what()).find("cross_entropy: targets: expected shape [4]"),
              std::string::npos)
        << e.what();
  }
  EXPECT_THROW(
      ops::cross_entropy(logits, targets, Tensor::empty(Shape{4, 9}, DType::kF32, meta), 1.0),
      ShapeError);
  EXPECT_THROW(ops::cross_entropy(Tensor::zeros(Shape{4, 10}, DType::kBF16),
                                  Tensor::zeros(Shape{4}, DType::kI32), TensorView(), 1.0),
               ShapeError);
}

}  // namespace
}  // namespace memento
