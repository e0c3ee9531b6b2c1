#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "core/layers/rmsnorm.h"
#include "core/ops/rmsnorm.h"
#include "testing/gradcheck.h"

namespace memento {
namespace {

using testing::random_tensor;

TEST(LayersRMSNorm, GradientsMatchFiniteDifferences) {
  ParameterSet params;
  RMSNorm norm(params, "model.norm", 9, 1e-5f);
  params.allocate(DType::kF64);
  // Random weights instead of ones, so that the weight enters dx non-trivially.
  copy(random_tensor(Shape{9}, DType::kF64, 1), params.value(ParamRef{0}));
  const Tensor x = random_tensor(Shape{2, 3, 9}, DType::kF64, 2);  // (B, T, C)
  testing::GradCheckCase c;
  c.params = &params;
  c.inputs = {x};
  c.input_names = {"x"};
  c.forward = [&](LayerContext& ctx) { return norm.forward(ctx, x); };
  c.backward = [&](LayerContext& ctx, const Tensor& dy) {
    return std::vector<Tensor>{norm.backward(ctx, dy)};
  };
  testing::expect_gradients_match(c);
}

TEST(LayersRMSNorm, ForwardMatchesReferenceAndSavesXAndRstd) {
  ParameterSet params;
  RMSNorm norm(params, "norm", 16, 1e-6f);
  params.allocate(DType::kF32);
  params.initialize(0);
  const Tensor x = random_tensor(Shape{3, 4, 16}, DType::kF32, 3, 5.0);
  KeepActivationStore store;
  LayerContext ctx{params, store, true};
  const Tensor y = norm.forward(ctx, x);
  for (int64_t r = 0; r < 12; ++r) {
    double ms = 0;
    for (int64_t c = 0; c < 16; ++c)
      ms += double(x.data<float>()[r * 16 + c]) * x.data<float>()[r * 16 + c];
    const double s = 1 / std::sqrt(ms / 16 + 1e-6);
    for (int64_t c = 0; c < 16; ++c)
      EXPECT_NEAR(y.data<float>()[r * 16 + c], x.data<float>()[r * 16 + c] * s, 1e-5) << r;
  }
  ASSERT_EQ(store.records().size(), 2u);
  EXPECT_EQ(store.records()[0].key, "norm/x");
  EXPECT_EQ(store.records()[1].key, "norm/rstd");
  EXPECT_EQ(store.records()[1].shape, (Shape{12}));
  norm.backward(ctx, y);
  EXPECT_TRUE(store.empty());
}

// In fp64 the epsilon is used as configured, not rounded to fp32 on the way (0.1 is not an fp32
// value); in fp32 it is the fp32 value, as it always was.
TEST(LayersRMSNorm, EpsilonIsExactInF64AndFp32RoundedInF32) {
  constexpr double kEps = 0.1;
  for (DType dtype : {DType::kF64, DType::kF32}) {
    SCOPED_TRACE(dtype_name(dtype));
    ParameterSet params;
    RMSNorm norm(params, "norm", 8, kEps);
    params.allocate(dtype);
    params.initialize(0);
    const Tensor x = random_tensor(Shape{4, 8}, dtype, 7, 0.1);  // small: eps matters
    KeepActivationStore store;
    LayerContext ctx{params, store, false};
    const Tensor y = norm.forward(ctx, x);
    const double eps = dtype == DType::kF64 ? kEps : static_cast<double>(static_cast<float>(kEps));
    const Tensor want = Tensor::empty(x.shape(), dtype);
    const Tensor rstd = Tensor::empty(Shape{4}, dtype);
    ops::rmsnorm_forward(x, params.value(ParamRef{0}), eps, want, rstd);
    EXPECT_EQ(std::memcmp(y.view().raw(), want.view().raw(), y.bytes()), 0);
  }
}

TEST(LayersRMSNorm, MetaDryRunGivesShapes) {
  ParameterSet params;
  RMSNorm norm(params, "norm", 16, 1e-6f);
  params.allocate(DType::kF32, Device::meta());
  KeepActivationStore store;
  LayerContext ctx{params, store, true};
  const Tensor x = Tensor::empty(Shape{2, 5, 16}, DType::kF32, Device::meta());
  const Tensor y = norm.forward(ctx, x);
  EXPECT_EQ(y.shape(), x.shape());
  EXPECT_TRUE(y.device().is_meta());
  const Tensor dx = norm.backward(ctx, y);
  EXPECT_EQ(dx.shape(), x.shape());
  EXPECT_TRUE(dx.device().is_meta());
  EXPECT_EQ(store.records()[1].bytes, 10u * 4);
}

TEST(LayersRMSNorm, ShapeErrorsNameTheLayer) {
  ParameterSet params;
  RMSNorm norm(params, "norm", 16, 1e-6f);
  params.allocate(DType::kF32);
  KeepActivationStore store;
  LayerContext ctx{params, store, true};
  try {
    norm.forward(ctx, Tensor::zeros(Shape{2, 15}, DType::kF32));
    ADD_FAILURE() << "no ShapeError";
  } catch (const ShapeError& e) {
    EXPECT_NE(std::string(e.what()).find("RMSNorm norm: x: expected (..., 16)"), std::string::npos)
        << e.what();
  }
}

}  // namespace
}  // namespace memento
