#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "core/layers/swiglu_mlp.h"
#include "testing/gradcheck.h"

namespace memento {
namespace {

using testing::random_tensor;

// (C, F) = (6, 10): gate_proj's 60 elements are not a multiple of the 16-element alignment, and
// the stacked weight still holds up_proj right after them (no padding between the two).
void check_gradients(int64_t C, int64_t F) {
  ParameterSet params;
  SwiGLUMLP mlp(params, "model.layers.0.mlp", C, F, 0.5f, 0.3f);
  ASSERT_TRUE(params.adjacent(ParamRef{0}, ParamRef{1}));
  params.allocate(DType::kF64);
  params.initialize(1);
  const Tensor x = random_tensor(Shape{2, 3, C}, DType::kF64, 2);  // (B, T, C)
  testing::GradCheckCase c;
  c.params = &params;
  c.inputs = {x};
  c.input_names = {"x"};
  c.forward = [&](LayerContext& ctx) { return mlp.forward(ctx, x); };
  c.backward = [&](LayerContext& ctx, const Tensor& dy) {
    return std::vector<Tensor>{mlp.backward(ctx, dy)};
  };
  testing::expect_gradients_match(c);
}

TEST(LayersSwiGLUMLP, GradientsMatchFiniteDifferences) { check_gradients(8, 12); }
TEST(LayersSwiGLUMLP, UnalignedStackedGradientsMatchFiniteDifferences) { check_gradients(6, 10); }

TEST(LayersSwiGLUMLP, ForwardMatchesReference) {
  const int64_t C = 5, F = 7, N = 4;
  ParameterSet params;
  SwiGLUMLP mlp(params, "mlp", C, F, 0.5f, 0.5f);
  params.allocate(DType::kF64);
  params.initialize(3);
  const double* Wg = params.value(ParamRef{0}).data<double>();  // (F, C)
  const double* Wu = params.value(ParamRef{1}).data<double>();  // (F, C)
  const double* Wd = params.value(ParamRef{2}).data<double>();  // (C, F)
  const Tensor x = random_tensor(Shape{1, N, C}, DType::kF64, 4);
  KeepActivationStore store;
  LayerContext ctx{params, store, false};
  const Tensor y = mlp.forward(ctx, x);
  for (int64_t n = 0; n < N; ++n) {
    std::vector<double> h(F);
    for (int64_t f = 0; f < F; ++f) {
      double g = 0, u = 0;
      for (int64_t c = 0; c < C; ++c) {
        g += Wg[f * C + c] * x.data<double>()[n * C + c];
        u += Wu[f * C + c] * x.data<double>()[n * C + c];
      }
      h[f] = g / (1 + std::exp(-g)) * u;
    }
    for (int64_t c = 0; c < C; ++c) {
      double ref = 0;
      for (int64_t f = 0; f < F; ++f) ref += Wd[c * F + f] * h[f];
      EXPECT_NEAR(y.data<double>()[n * C + c], ref, 1e-13) << n << ", " << c;
    }
  }
}

// What the MLP keeps for backward: x once and the gate and up pre-activations, aligned or not.
TEST(LayersSwiGLUMLP, SavesXOnceAndGateAndUp) {
  struct Form {
    int64_t C, F;
    std::vector<std::string> keys;
  };
  for (const Form& f :
       {Form{8, 12, {"mlp/x", "mlp/gate_up"}}, Form{6, 10, {"mlp/x", "mlp/gate_up"}}}) {
    ParameterSet params;
    SwiGLUMLP mlp(params, "mlp", f.C, f.F, 0.02f, 0.02f);
    params.allocate(DType::kF32);
    params.initialize(5);
    const Tensor x = random_tensor(Shape{2, 3, f.C}, DType::kF32, 6);
    KeepActivationStore store;
    LayerContext ctx{params, store, true};
    const Tensor y = mlp.forward(ctx, x);
    std::vector<std::string> keys;
    for (const auto& r : store.records()) keys.push_back(r.key);
    EXPECT_EQ(keys, f.keys);
    const auto C = static_cast<size_t>(f.C), F = static_cast<size_t>(f.F);
    EXPECT_EQ(store.live_bytes(), (2u * 3 * C + 2 * 2u * 3 * F) * 4);  // x counted once
    mlp.backward(ctx, y);
    EXPECT_TRUE(store.empty());
  }
}

TEST(LayersSwiGLUMLP, BackwardIsDeterministic) {
  ParameterSet params;
  SwiGLUMLP mlp(params, "mlp", 16, 24, 0.1f, 0.1f);
  params.allocate(DType::kF32);
  params.initialize(7);
  const Tensor x = random_tensor(Shape{2, 9, 16}, DType::kF32, 8);
  const Tensor dy = random_tensor(Shape{2, 9, 16}, DType::kF32, 9);
  auto run = [&]() {
    params.zero_grads();
    KeepActivationStore store;
    LayerContext ctx{params, store, true};
    mlp.forward(ctx, x);
    Tensor dx = mlp.backward(ctx, dy);
    Tensor grads = Tensor::empty_like(params.flat_grads());
    copy(params.flat_grads(), grads);
    return std::vector<Tensor>{dx, grads};
  };
  const auto a = run(), b = run();
  for (size_t k = 0; k < a.size(); ++k)
    EXPECT_EQ(std::memcmp(a[k].data<float>(), b[k].data<float>(), a[k].bytes()), 0) << k;
}

TEST(LayersSwiGLUMLP, MetaDryRunGivesShapes) {
  ParameterSet params;
  SwiGLUMLP mlp(params, "mlp", 8, 12, 0.02f, 0.02f);
  params.allocate(DType::kF32, Device::meta());
  KeepActivationStore store;
  LayerContext ctx{params, store, true};
  const Tensor x = Tensor::empty(Shape{2, 3, 8}, DType::kF32, Device::meta());
  const Tensor y = mlp.forward(ctx, x);
  EXPECT_EQ(y.shape(), x.shape());
  EXPECT_TRUE(y.device().is_meta());
  const Tensor dx = mlp.backward(ctx, y);
  EXPECT_EQ(dx.shape(), x.shape());
  EXPECT_TRUE(dx.device().is_meta());
  EXPECT_TRUE(store.empty());
  EXPECT_THROW(mlp.forward(ctx, Tensor::empty(Shape{2, 3, 7}, DType::kF32, Device::meta())),
               ShapeError);
}

}  // namespace
}  // namespace memento
