#include <gtest/gtest.h>
#include <omp.h>

#include <cstring>
#include <string>
#include <vector>

#include "core/ops/embedding.h"
#include "testing/gradcheck.h"

namespace memento {
namespace {

using testing::random_tensor;

Tensor tokens_of(int64_t B, int64_t T, const std::vector<int32_t>& ids) {
  Tensor t = Tensor::empty(Shape{B, T}, DType::kI32);
  std::memcpy(t.data<int32_t>(), ids.data(), ids.size() * sizeof(int32_t));
  return t;
}

// Ids with repeats (a frequent id 3 among others), length B * T.
std::vector<int32_t> some_ids(int64_t n, int64_t V) {
  std::vector<int32_t> ids(n);
  for (int64_t i = 0; i < n; ++i) ids[i] = i % 3 == 0 ? 3 : static_cast<int32_t>((i * 7919) % V);
  return ids;
}

template <typename T>
void check_gather_and_scatter(DType dtype) {
  const int64_t B = 3, Tn = 10, V = 23, C = 70;
  const std::vector<int32_t> ids = some_ids(B * Tn, V);
  const Tensor tokens = tokens_of(B, Tn, ids);
  const Tensor w = random_tensor(Shape{V, C}, dtype, 1);
  const Tensor out = Tensor::empty(Shape{B, Tn, C}, dtype);
  ops::embedding_forward(tokens, w, out);
  for (int64_t n = 0; n < B * Tn; ++n)
    for (int64_t c = 0; c < C; ++c)
      ASSERT_EQ(out.data<T>()[n * C + c], w.data<T>()[ids[n] * C + c]) << n << ", " << c;

  const Tensor dout = random_tensor(Shape{B, Tn, C}, dtype, 2);
  const Tensor dw = random_tensor(Shape{V, C}, dtype, 3);  // the scatter adds to this
  std::vector<T> expected(dw.data<T>(), dw.data<T>() + V * C);
  for (int64_t n = 0; n < B * Tn; ++n)
    for (int64_t c = 0; c < C; ++c) expected[ids[n] * C + c] += dout.data<T>()[n * C + c];
  ops::embedding_backward(tokens, dout, dw);
  for (int64_t i = 0; i < V * C; ++i) ASSERT_EQ(dw.data<T>()[i], expected[i]) << i;
}

TEST(OpsEmbedding, GatherAndScatterAddF32) { check_gather_and_scatter<float>(DType::kF32); }
TEST(OpsEmbedding, GatherAndScatterAddF64) { check_gather_and_scatter<double>(DType::kF64); }

TEST(OpsEmbedding, ScatterIsBitIdenticalForAnyThreadCount) {
  const int64_t B = 4, Tn = 64, V = 50, C = 200;
  const Tensor tokens = tokens_of(B, Tn, some_ids(B * Tn, V));
  const Tensor dout = random_tensor(Shape{B, Tn, C}, DType::kF32, 4);
  auto run = [&](int threads) {
    omp_set_num_threads(threads);
    Tensor dw = Tensor::zeros(Shape{V, C}, DType::kF32);
    ops::embedding_backward(tokens, dout, dw);
    return dw;
  };
  const int threads = omp_get_max_threads();
  const Tensor a = run(1), b = run(3), c = run(threads);
  omp_set_num_threads(threads);
  EXPECT_EQ(std::memcmp(a.data<float>(), b.data<float>(), a.bytes()), 0);
  EXPECT_EQ(std::memcmp(a.data<float>(), c.data<float>(), a.bytes()), 0);
}

TEST(OpsEmbedding, OutOfRangeIdsAreDataErrorsNamingIdAndPosition) {
  const Tensor w = Tensor::zeros(Shape{10, 4}, DType::kF32);
  const Tensor out = Tensor::empty(Shape{2, 3, 4}, DType::kF32);
  for (int32_t bad : {10, -1}) {
    const Tensor tokens = tokens_of(2, 3, {0, 1, 2, 3, 4, bad});
    try {
      ops::embedding_forward(tokens, w, out);
      ADD_FAILURE() << "no DataError for " << bad;
    } catch (const DataError& e) {
      const std::string msg = e.what();
      EXPECT_NE(msg.find("token id " + std::to_string(bad)), std::string::npos) << msg;
      EXPECT_NE(msg.find("(1, 2)"), std::string::npos) << msg;
    }
    EXPECT_THROW(ops::embedding_backward(tokens, out, w), DataError);
  }
}

TEST(OpsEmbedding, MetaAndShapeErrors) {
  const Device meta = Device::meta();
  const Tensor tokens = Tensor::empty(Shape{2, 3}, DType::kI32, meta);
  const Tensor w = Tensor::empty(Shape{10, 4}, DType::kF32, meta);
  const Tensor out = Tensor::empty(Shape{2, 3, 4}, DType::kF32, meta);
  ops::embedding_forward(tokens, w, out);
  ops::embedding_backward(tokens, out, w);
  try {
    ops::embedding_forward(tokens, w, Tensor::empty(Shape{2, 3, 5}, DType::kF32, meta));
    ADD_FAILURE() << "no ShapeError";
  } catch (const ShapeError& e) {
    EXPECT_NE(std::string(e.what()).find("embedding_forward: out: expected shape [2, 3, 4]"),
              std::string::npos)
        << e.what();
  }
  EXPECT_THROW(ops::embedding_forward(Tensor::empty(Shape{2, 3}, DType::kI64, meta), w, out),
               ShapeError);
  EXPECT_THROW(ops::embedding_forward(Tensor::empty(Shape{6}, DType::kI32, meta), w, out),
               ShapeError);
}

}  // namespace
}  // namespace memento
