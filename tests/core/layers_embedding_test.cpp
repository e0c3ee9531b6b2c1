#include <gtest/gtest.h>

#include <cstring>
#include <string>
#include <vector>

#include "core/layers/embedding.h"
#include "testing/gradcheck.h"

namespace memento {
namespace {

Tensor tokens_of(int64_t B, int64_t T, const std::vector<int32_t>& ids) {
  Tensor t = Tensor::empty(Shape{B, T}, DType::kI32);
  std::memcpy(t.data<int32_t>(), ids.data(), ids.size() * sizeof(int32_t));
  return t;
}

// The output is linear in the weight, so this checks the scatter-add against central differences
// of sum(out * w), with repeated ids (5 appears three times).
TEST(LayersEmbedding, WeightGradientMatchesFiniteDifferences) {
  ParameterSet params;
  Embedding embed(params, "model.embed_tokens", 7, 5, 1.0f);
  params.allocate(DType::kF64);
  params.initialize(1);
  const Tensor tokens = tokens_of(2, 4, {5, 0, 5, 6, 1, 5, 2, 0});
  testing::GradCheckCase c;
  c.params = &params;
  c.forward = [&](LayerContext& ctx) { return embed.forward(ctx, tokens); };
  c.backward = [&](LayerContext& ctx, const Tensor& dout) {
    embed.backward(ctx, dout);
    return std::vector<Tensor>{};
  };
  c.max_elements_per_tensor = 7 * 5;
  testing::expect_gradients_match(c);
}

TEST(LayersEmbedding, ForwardGathersRowsAndSavesTokens) {
  ParameterSet params;
  Embedding embed(params, "embed", 11, 6, 1.0f);
  params.allocate(DType::kF32);
  params.initialize(2);
  const Tensor tokens = tokens_of(1, 3, {10, 0, 4});
  KeepActivationStore store;
  LayerContext ctx{params, store, true};
  const Tensor out = embed.forward(ctx, tokens);
  ASSERT_EQ(out.shape(), (Shape{1, 3, 6}));
  const float* w = params.value(embed.weight()).data<float>();
  const int32_t ids[3] = {10, 0, 4};
  for (int t = 0; t < 3; ++t)
    for (int c = 0; c < 6; ++c) EXPECT_EQ(out.data<float>()[t * 6 + c], w[ids[t] * 6 + c]);
  ASSERT_EQ(store.records().size(), 1u);
  EXPECT_EQ(store.records()[0].key, "embed/tokens");
  embed.backward(ctx, out);
  EXPECT_TRUE(store.empty());
}

TEST(LayersEmbedding, OutOfRangeTokenIsDataErrorNamingIdAndPosition) {
  ParameterSet params;
  Embedding embed(params, "embed", 11, 6, 1.0f);
  params.allocate(DType::kF32);
  KeepActivationStore store;
  LayerContext ctx{params, store, true};
  try {
    embed.forward(ctx, tokens_of(2, 2, {1, 2, 11, 3}));
    ADD_FAILURE() << "no DataError";
  } catch (const DataError& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("token id 11 at (b, t) = (1, 0)"), std::string::npos) << msg;
  }
  EXPECT_TRUE(store.empty());
}

TEST(LayersEmbedding, MetaDryRunGivesShapes) {
  ParameterSet params;
  Embedding embed(params, "embed", 100, 8, 0.02f);
  params.allocate(DType::kF32, Device::meta());
  KeepActivationStore store;
  LayerContext ctx{params, store, true};
  const Tensor tokens = Tensor::empty(Shape{3, 5}, DType::kI32, Device::meta());
  const Tensor out = embed.forward(ctx, tokens);
  EXPECT_EQ(out.shape(), (Shape{3, 5, 8}));
  EXPECT_TRUE(out.device().is_meta());
  embed.backward(ctx, out);
  EXPECT_EQ(store.records()[0].bytes, 15u * 4);
  EXPECT_THROW(embed.forward(ctx, Tensor::empty(Shape{15}, DType::kI32, Device::meta())),
               ShapeError);
}

}  // namespace
}  // namespace memento
