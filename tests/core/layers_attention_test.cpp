// SoftmaxAttention and LinearAttention layers: forward against dense fp64 references built from
// the definitions, finite-difference gradients of every parameter and of the input, parameter
// names, and the kMeta dry run.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "core/layers/linear_attention.h"
#include "core/layers/softmax_attention.h"
#include "core/ops/linear_attention.h"
#include "testing/gradcheck.h"

namespace memento {
namespace {

using testing::random_tensor;

constexpr AttentionDims kDims{16, 4, 2, 4};  // C, NH, NKV, HS
constexpr int64_t kB = 2, kT = 9;

// y (rows, out) = x (rows, in) W^T with W (out, in), all fp64.
std::vector<double> project(const double* x, int64_t rows, int64_t in, const TensorView& W) {
  const int64_t out = W.size(0);
  std::vector<double> y(rows * out, 0.0);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t o = 0; o < out; ++o)
      for (int64_t i = 0; i < in; ++i)
        y[r * out + o] += x[r * in + i] * W.data<double>()[o * in + i];
  return y;
}

struct Projections {
  std::vector<double> q, k, v;  // (B, T, NH, HS), (B, T, NKV, HS), (B, T, NKV, HS)
};

Projections projections(const ParameterSet& p, const std::string& name, const Tensor& x) {
  auto w = [&](const char* proj) {
    return p.value(
        ParamRef{static_cast<int>(p.find(name + "." + proj + ".weight") - p.entries().data())});
  };
  const double* xd = x.data<double>();
  return {project(xd, kB * kT, kDims.C, w("q_proj")), project(xd, kB * kT, kDims.C, w("k_proj")),
          project(xd, kB * kT, kDims.C, w("v_proj"))};
}

TensorView param(const ParameterSet& p, const std::string& name) {
  return p.value(ParamRef{static_cast<int>(p.find(name) - p.entries().data())});
}

void expect_close(const Tensor& y, const std::vector<double>& ref, double tol) {
  ASSERT_EQ(static_cast<size_t>(y.numel()), ref.size());
  for (int64_t i = 0; i < y.numel(); ++i) EXPECT_NEAR(y.data<double>()[i], ref[i], tol) << i;
}

// Rotate-half RoPE on rows (B, T, H, HS) in place.
void rope_reference(std::vector<double>& x, int64_t H, double theta) {
  const int64_t HS = kDims.HS, half = HS / 2;
  for (int64_t b = 0; b < kB; ++b)
    for (int64_t t = 0; t < kT; ++t)
      for (int64_t h = 0; h < H; ++h)
        for (int64_t i = 0; i < half; ++i) {
          double* r = x.data() + ((b * kT + t) * H + h) * HS;
          const double a = t * std::pow(theta, -2.0 * i / HS), x0 = r[i], x1 = r[i + half];
          r[i] = x0 * std::cos(a) - x1 * std::sin(a);
          r[i + half] = x1 * std::cos(a) + x0 * std::sin(a);
        }
}

TEST(SoftmaxAttentionLayer, ForwardMatchesDefinition) {
  ParameterSet params;
  SoftmaxAttention layer(params, "attn", kDims, 100.0f, 0.3f, 0.3f);
  params.allocate(DType::kF64);
  params.initialize(3);
  const Tensor x = random_tensor({kB, kT, kDims.C}, DType::kF64, 4);
  KeepActivationStore store;
  LayerContext ctx{params, store, false};
  const Tensor y = layer.forward(ctx, x);
  Projections p = projections(params, "attn", x);
  rope_reference(p.q, kDims.NH, 100.0);
  rope_reference(p.k, kDims.NKV, 100.0);
  const int64_t NH = kDims.NH, NKV = kDims.NKV, HS = kDims.HS;
  std::vector<double> att(kB * kT * NH * HS, 0.0);
  for (int64_t b = 0; b < kB; ++b)
    for (int64_t h = 0; h < NH; ++h)
      for (int64_t i = 0; i < kT; ++i) {
        const int64_t g = h / (NH / NKV);
        std::vector<double> s(i + 1);
        double mx = -INFINITY, sum = 0;
        for (int64_t j = 0; j <= i; ++j) {
          s[j] = 0;
          for (int64_t d = 0; d < HS; ++d)
            s[j] += p.q[((b * kT + i) * NH + h) * HS + d] * p.k[((b * kT + j) * NKV + g) * HS + d];
          s[j] /= std::sqrt(static_cast<double>(HS));
          mx = std::max(mx, s[j]);
        }
        for (double& e : s) sum += (e = std::exp(e - mx));
        for (int64_t j = 0; j <= i; ++j)
          for (int64_t d = 0; d < HS; ++d)
            att[((b * kT + i) * NH + h) * HS + d] +=
                s[j] / sum * p.v[((b * kT + j) * NKV + g) * HS + d];
      }
  expect_close(y, project(att.data(), kB * kT, NH * HS, param(params, "attn.o_proj.weight")),
               1e-12);
}

TEST(LinearAttentionLayer, ForwardMatchesDefinition) {
  for (bool decay : {false, true}) {
    SCOPED_TRACE(decay ? "decay" : "no decay");
    ParameterSet params;
    // An output-norm epsilon far from the default: the layer must use the one it is given.
    constexpr double kEps = 0.25;
    LinearAttention layer(params, "attn", kDims, {decay, true, 4, kEps}, 0.3f, 0.3f);
    params.allocate(DType::kF64);
    params.initialize(5);
    // A non-trivial output-norm weight.
    const TensorView w = param(params, "attn.o_norm.weight");
    for (int64_t i = 0; i < kDims.HS; ++i) w.data<double>()[i] = 0.5 + 0.25 * i;
    const Tensor x = random_tensor({kB, kT, kDims.C}, DType::kF64, 6);
    KeepActivationStore store;
    LayerContext ctx{params, store, false};
    const Tensor y = layer.forward(ctx, x);
    const Projections p = projections(params, "attn", x);
    const int64_t NH = kDims.NH, NKV = kDims.NKV, HS = kDims.HS;
    const std::vector<double> lambdas = ops::alibi_decays(NH);
    std::vector<double> att(kB * kT * NH * HS, 0.0);
    for (int64_t b = 0; b < kB; ++b)
      for (int64_t h = 0; h < NH; ++h)
        for (int64_t t = 0; t < kT; ++t) {
          const int64_t g = h / (NH / NKV);
          double* o = att.data() + ((b * kT + t) * NH + h) * HS;
          for (int64_t j = 0; j <= t; ++j) {
            double qk = 0;
            for (int64_t d = 0; d < HS; ++d)
              qk += p.q[((b * kT + t) * NH + h) * HS + d] * p.k[((b * kT + j) * NKV + g) * HS + d];
            const double a = qk * (decay ? std::pow(lambdas[h], t - j) : 1.0);
            for (int64_t d = 0; d < HS; ++d) o[d] += a * p.v[((b * kT + j) * NKV + g) * HS + d];
          }
          double ms = 0;
          for (int64_t d = 0; d < HS; ++d) ms += o[d] * o[d] / HS;
          for (int64_t d = 0; d < HS; ++d) o[d] *= w.data<double>()[d] / std::sqrt(ms + kEps);
        }
    expect_close(y, project(att.data(), kB * kT, NH * HS, param(params, "attn.o_proj.weight")),
                 1e-12);
  }
}

template <typename Layer>
void check_layer_gradients(ParameterSet& params, Layer& layer, uint64_t seed) {
  params.allocate(DType::kF64);
  params.initialize(seed);
  // Perturb norm weights away from ones so their gradient check is not a special case.
  for (size_t e = 0; e < params.entries().size(); ++e) {
    if (params.entries()[e].name.find("o_norm") == std::string::npos) continue;
    const TensorView w = params.value(ParamRef{static_cast<int>(e)});
    for (int64_t i = 0; i < w.numel(); ++i) w.data<double>()[i] = 0.75 + 0.1 * i;
  }
  const Tensor x = random_tensor({kB, kT, kDims.C}, DType::kF64, seed + 1);
  testing::GradCheckCase gc;
  gc.params = &params;
  gc.inputs = {x};
  gc.input_names = {"x"};
  gc.forward = [&](LayerContext& ctx) { return layer.forward(ctx, x); };
  gc.backward = [&](LayerContext& ctx, const Tensor& dy) {
    return std::vector<Tensor>{layer.backward(ctx, dy)};
  };
  testing::expect_gradients_match(gc);
}

TEST(SoftmaxAttentionLayer, FiniteDifferenceGradients) {
  ParameterSet params;
  SoftmaxAttention layer(params, "model.layers.0.self_attn", kDims, 10000.0f, 0.3f, 0.3f);
  check_layer_gradients(params, layer, 7);
}

TEST(LinearAttentionLayer, FiniteDifferenceGradients) {
  for (bool decay : {false, true}) {
    for (bool norm : {false, true}) {
      SCOPED_TRACE(::testing::Message() << "decay " << decay << " output_norm " << norm);
      ParameterSet params;
      LinearAttention layer(params, "model.layers.0.self_attn", kDims, {decay, norm, 4}, 0.3f,
                            0.3f);
      check_layer_gradients(params, layer, 9);
    }
  }
}

TEST(AttentionLayers, HuggingFaceParameterNames) {
  ParameterSet params;
  SoftmaxAttention softmax(params, "a", kDims, 1e4f, 0.02f, 0.01f);
  LinearAttention linear(params, "b", kDims, {true, true, 64}, 0.02f, 0.01f);
  const std::vector<std::pair<std::string, Shape>> expected = {
      {"a.q_proj.weight", {16, 16}}, {"a.k_proj.weight", {8, 16}},  {"a.v_proj.weight", {8, 16}},
      {"a.o_proj.weight", {16, 16}}, {"b.q_proj.weight", {16, 16}}, {"b.k_proj.weight", {8, 16}},
      {"b.v_proj.weight", {8, 16}},  {"b.o_proj.weight", {16, 16}}, {"b.o_norm.weight", {4}}};
  ASSERT_EQ(params.entries().size(), expected.size());
  for (size_t i = 0; i < expected.size(); ++i) {
    EXPECT_EQ(params.entries()[i].name, expected[i].first);
    EXPECT_EQ(params.entries()[i].shape, expected[i].second) << expected[i].first;
  }
  EXPECT_FALSE(params.find("b.o_norm.weight")->weight_decay);
}

// The dry run: kMeta input through forward and backward lists every saved activation.
template <typename Layer>
void check_meta(ParameterSet& params, Layer& layer, size_t saved_keys) {
  params.allocate(DType::kF32);
  params.initialize(1);
  KeepActivationStore store;
  LayerContext ctx{params, store, true};
  const Tensor x = Tensor::empty({kB, kT, kDims.C}, DType::kF32, Device::meta());
  const Tensor y = layer.forward(ctx, x);
  EXPECT_TRUE(y.device().is_meta());
  EXPECT_EQ(y.shape(), x.shape());
  EXPECT_EQ(store.records().size(), saved_keys);
  const Tensor dx = layer.backward(ctx, Tensor::empty(y.shape(), DType::kF32, Device::meta()));
  EXPECT_TRUE(dx.device().is_meta());
  EXPECT_EQ(dx.shape(), x.shape());
  EXPECT_TRUE(store.empty());
}

TEST(AttentionLayers, MetaDryRun) {
  {
    ParameterSet params;
    SoftmaxAttention layer(params, "s", kDims, 1e4f, 0.02f, 0.02f);
    check_meta(params, layer, 9);  // x three times, att by o_proj, q, k, v, att, lse
  }
  {
    ParameterSet params;
    LinearAttention layer(params, "l", kDims, {true, true, 4}, 0.02f, 0.02f);
    check_meta(params, layer, 7);  // x three times, q, k, v, att (o_proj's input is rebuilt)
  }
}

}  // namespace
}  // namespace memento
