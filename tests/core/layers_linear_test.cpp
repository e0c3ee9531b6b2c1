#include <gtest/gtest.h>

#include <cstring>
#include <string>
#include <vector>

#include "core/layers/linear.h"
#include "core/ops/matmul.h"
#include "testing/gradcheck.h"

namespace memento {
namespace {

using testing::random_tensor;

TEST(LayersLinear, GradientsMatchFiniteDifferences) {
  ParameterSet params;
  Linear linear(params, "model.layers.0.mlp.up_proj", 6, 5, 0.5f);
  params.allocate(DType::kF64);
  params.initialize(1);
  const Tensor x = random_tensor(Shape{2, 3, 6}, DType::kF64, 2);  // (B, T, in)
  testing::GradCheckCase c;
  c.params = &params;
  c.inputs = {x};
  c.input_names = {"x"};
  c.forward = [&](LayerContext& ctx) { return linear.forward(ctx, x); };
  c.backward = [&](LayerContext& ctx, const Tensor& dy) {
    return std::vector<Tensor>{linear.backward(ctx, dy)};
  };
  testing::expect_gradients_match(c);
}

TEST(LayersLinear, ForwardMatchesReferenceAndWeightGradientsAccumulate) {
  ParameterSet params;
  Linear linear(params, "proj", 7, 3, 0.3f);
  params.allocate(DType::kF32);
  params.initialize(3);
  const Tensor x = random_tensor(Shape{4, 7}, DType::kF32, 4);
  KeepActivationStore store;
  LayerContext ctx{params, store, true};
  const Tensor y = linear.forward(ctx, x);
  ASSERT_EQ(y.shape(), (Shape{4, 3}));
  const float* W = params.value(linear.weight()).data<float>();  // (out, in)
  for (int64_t n = 0; n < 4; ++n)
    for (int64_t o = 0; o < 3; ++o) {
      double ref = 0;
      for (int64_t i = 0; i < 7; ++i) ref += double(x.data<float>()[n * 7 + i]) * W[o * 7 + i];
      EXPECT_NEAR(y.data<float>()[n * 3 + o], ref, 1e-5) << n << ", " << o;
    }
  EXPECT_EQ(store.live_bytes(), x.bytes());  // saved x
  const Tensor dy = random_tensor(Shape{4, 3}, DType::kF32, 5);
  linear.backward(ctx, dy);
  const TensorView g = params.grad(linear.weight());
  const std::vector<float> once(g.data<float>(), g.data<float>() + g.numel());
  linear.forward(ctx, x);
  linear.backward(ctx, dy);
  for (int64_t i = 0; i < g.numel(); ++i) EXPECT_FLOAT_EQ(g.data<float>()[i], 2 * once[i]) << i;
  EXPECT_TRUE(store.empty());
}

TEST(LayersLinear, InferenceSavesNothing) {
  ParameterSet params;
  Linear linear(params, "proj", 4, 4, 0.3f);
  params.allocate(DType::kF32);
  KeepActivationStore store;
  LayerContext ctx{params, store, false};
  linear.forward(ctx, Tensor::zeros(Shape{2, 4}, DType::kF32));
  EXPECT_TRUE(store.records().empty());
}

TEST(LayersLinear, MetaDryRunGivesShapesAndRecords) {
  ParameterSet params;
  Linear linear(params, "proj", 8, 12, 0.02f);
  params.allocate(DType::kF32, Device::meta());
  KeepActivationStore store;
  LayerContext ctx{params, store, true};
  const Tensor x = Tensor::empty(Shape{2, 5, 8}, DType::kF32, Device::meta());
  const Tensor y = linear.forward(ctx, x);
  EXPECT_EQ(y.shape(), (Shape{2, 5, 12}));
  EXPECT_TRUE(y.device().is_meta());
  const Tensor dx = linear.backward(ctx, y);
  EXPECT_EQ(dx.shape(), x.shape());
  EXPECT_TRUE(dx.device().is_meta());
  ASSERT_EQ(store.records().size(), 1u);
  EXPECT_EQ(store.records()[0].key, "proj/x");
  EXPECT_EQ(store.records()[0].bytes, 2u * 5 * 8 * 4);
}

// backward_input then backward_weight (x handed over, nothing saved) is backward bit for bit.
TEST(LayersLinear, SplitBackwardEqualsBackward) {
  ParameterSet params;
  Linear linear(params, "proj", 9, 5, 0.3f);
  params.allocate(DType::kF32);
  params.initialize(7);
  const Tensor x = random_tensor(Shape{2, 3, 9}, DType::kF32, 8);
  const Tensor dy = random_tensor(Shape{2, 3, 5}, DType::kF32, 9);
  KeepActivationStore store;
  LayerContext ctx{params, store, true};
  linear.forward(ctx, x);
  const Tensor dx = linear.backward(ctx, dy);
  const TensorView grad = params.grad(linear.weight());
  const std::vector<float> dw(grad.data<float>(), grad.data<float>() + grad.numel());
  params.zero_grads();

  LayerContext no_save{params, store, false};
  linear.forward(no_save, x);
  EXPECT_TRUE(store.empty());
  const Tensor dx_split = linear.backward_input(ctx, dy);
  linear.backward_weight(ctx, dy, x);
  ASSERT_EQ(dx_split.shape(), x.shape());
  EXPECT_EQ(std::memcmp(dx_split.data<float>(), dx.data<float>(), dx.bytes()), 0);
  EXPECT_EQ(std::memcmp(grad.data<float>(), dw.data(), grad.bytes()), 0);
  EXPECT_THROW(linear.backward_weight(ctx, dy, Tensor::zeros(Shape{2, 3, 8}, DType::kF32)),
               ShapeError);
}

TEST(LayersLinear, ShapeErrorsNameTheLayer) {
  ParameterSet params;
  Linear linear(params, "proj", 8, 12, 0.02f);
  params.allocate(DType::kF32);
  KeepActivationStore store;
  LayerContext ctx{params, store, true};
  try {
    linear.forward(ctx, Tensor::zeros(Shape{2, 7}, DType::kF32));
    ADD_FAILURE() << "no ShapeError";
  } catch (const ShapeError& e) {
    EXPECT_NE(std::string(e.what()).find("Linear proj: x: expected (..., 8)"), std::string::npos)
        << e.what();
  }
  EXPECT_THROW(linear.forward(ctx, Tensor::zeros(Shape{2, 8}, DType::kF64)), ShapeError);
}

// The precision picks the weight a GEMM reads: kCompute the compute copy (bf16 here, which an fp32
// activation cannot be multiplied with: a ShapeError), kFp32 the fp32 master, bit for bit.
TEST(LayersLinear, PrecisionChoosesTheMasterOrTheComputeWeight) {
  ParameterSet params;
  Linear fp32(params, "head32", 8, 4, 0.5f, GemmPrecision::kFp32);
  Linear compute(params, "head", 8, 4, 0.5f);
  params.allocate(DType::kF32, Device::cpu(), nullptr, DType::kBF16);
  params.initialize(3);
  const Tensor x = random_tensor(Shape{2, 8}, DType::kF32, 4);
  KeepActivationStore store;
  LayerContext ctx{params, store, false};
  const Tensor y = fp32.forward(ctx, x);
  const Tensor want = Tensor::empty(Shape{2, 4}, DType::kF32);
  ops::matmul(x, false, params.value(fp32.weight()), true, want);
  EXPECT_EQ(std::memcmp(y.view().raw(), want.view().raw(), y.bytes()), 0);
  EXPECT_THROW(compute.forward(ctx, x), ShapeError);
}

// A tied Linear multiplies with another layer's parameter and adds its gradient there.
TEST(LayersLinear, TiedWeightIsTheOwnersParameter) {
  ParameterSet params;
  const ParamRef table = params.declare("embed.weight", Shape{5, 3}, ParamInit::normal(0.5f));
  Linear head = Linear::tied(params, "lm_head", table);
  EXPECT_EQ(head.in(), 3);
  EXPECT_EQ(head.out(), 5);
  EXPECT_EQ(params.entries().size(), 1u);  // declares nothing of its own
  params.allocate(DType::kF64);
  params.initialize(5);
  const Tensor x = random_tensor(Shape{4, 3}, DType::kF64, 6);
  const Tensor dy = random_tensor(Shape{4, 5}, DType::kF64, 7);
  KeepActivationStore store;
  LayerContext ctx{params, store, true};
  const Tensor y = head.forward(ctx, x);
  head.backward(ctx, dy);
  const double* E = params.value(table).data<double>();
  const double* dE = params.grad(table).data<double>();
  for (int64_t n = 0; n < 4; ++n)
    for (int64_t v = 0; v < 5; ++v) {
      double ref = 0;
      for (int64_t c = 0; c < 3; ++c) ref += x.data<double>()[n * 3 + c] * E[v * 3 + c];
      EXPECT_NEAR(y.data<double>()[n * 5 + v], ref, 1e-14);
    }
  for (int64_t v = 0; v < 5; ++v)
    for (int64_t c = 0; c < 3; ++c) {
      double ref = 0;
      for (int64_t n = 0; n < 4; ++n)
        ref += dy.data<double>()[n * 5 + v] * x.data<double>()[n * 3 + c];
      EXPECT_NEAR(dE[v * 3 + c], ref, 1e-14);
    }
}

}  // namespace
}  // namespace memento
