// The whole model: an fp64 finite-difference check of every parameter's gradient of the
// cross-entropy loss, for softmax, linear and hybrid layer patterns, tied and untied heads; plus
// Hugging Face parameter names and shapes, and the dry run on the meta device.
#include <gtest/gtest.h>

#include <cmath>

#include "core/model/llama.h"
#include "memory/activation_store.h"
#include "testing/gradcheck.h"

namespace memento {
namespace {

ModelConfig tiny_model(std::vector<AttentionKind> pattern, bool tied) {
  ModelConfig c;
  c.vocab_size = 11;
  c.dim = 8;
  c.n_layers = 2;
  c.n_heads = 2;
  c.n_kv_heads = 1;
  c.ffn_dim = 12;
  c.max_seq_len = 16;
  c.layer_pattern = std::move(pattern);
  c.tie_embeddings = tied;
  c.linear_chunk = 3;  // several chunks within T = 7
  c.init_std = 0.3;    // large enough that every path carries signal
  c.dtype = DType::kF64;
  return c;
}

Tensor token_tensor(int64_t B, int64_t T, int64_t V, uint64_t seed) {
  Tensor t = Tensor::empty(Shape{B, T}, DType::kI32);
  for (int64_t i = 0; i < t.numel(); ++i)
    t.data<int32_t>()[i] = static_cast<int32_t>(philox4x32(seed, 3, i)[0] % V);
  return t;
}

struct Case {
  const char* name;
  std::vector<AttentionKind> pattern;
  bool tied;
};

class ModelGradientTest : public ::testing::TestWithParam<Case> {};

TEST_P(ModelGradientTest, EveryParameterMatchesFiniteDifferencesInFp64) {
  const Case& c = GetParam();
  LlamaModel model(tiny_model(c.pattern, c.tied));
  model.params().allocate(DType::kF64);
  model.params().initialize(5);
  const Tensor tokens = token_tensor(2, 7, 11, 1);
  const Tensor targets = token_tensor(2, 7, 11, 2);

  KeepActivationStore store;
  model.params().zero_grads();
  const double loss = model.forward_backward(store, tokens, targets, 1.0).loss_sum;
  EXPECT_TRUE(store.empty()) << "backward left activations in the store";
  EXPECT_TRUE(std::isfinite(loss));

  constexpr double kStep = 1e-5;
  int checked = 0;
  for (size_t p = 0; p < model.params().entries().size(); ++p) {
    const auto& e = model.params().entries()[p];
    const TensorView value = model.params().value(ParamRef{static_cast<int>(p)});
    const TensorView grad = model.params().grad(ParamRef{static_cast<int>(p)});
    const int64_t stride = std::max<int64_t>(1, value.numel() / 12);
    for (int64_t i = 0; i < value.numel(); i += stride) {
      double& x = value.data<double>()[i];
      const double saved = x;
      x = saved + kStep;
      const double up = model.forward_loss(tokens, targets).loss_sum;
      x = saved - kStep;
      const double down = model.forward_loss(tokens, targets).loss_sum;
      x = saved;
      const double numeric = (up - down) / (2 * kStep);
      const double analytic = grad.data<double>()[i];
      EXPECT_NEAR(analytic, numeric, 1e-7 + 1e-6 * std::fabs(numeric)) << e.name << "[" << i << "]";
      ++checked;
    }
  }
  EXPECT_GT(checked, 100);
}

INSTANTIATE_TEST_SUITE_P(
    Patterns, ModelGradientTest,
    ::testing::Values(Case{"softmax", {AttentionKind::kSoftmax}, false},
                      Case{"linear", {AttentionKind::kLinear}, false},
                      Case{"hybrid_tied", {AttentionKind::kLinear, AttentionKind::kSoftmax}, true}),
    [](const ::testing::TestParamInfo<Case>& param) { return std::string(param.param.name); });

TEST(ModelTest, ParametersAreNamedAndShapedAsHuggingFaceLlama) {
  ModelConfig c = tiny_model({AttentionKind::kSoftmax}, false);
  c.dtype = DType::kF32;
  LlamaModel model(c);
  const ParameterSet& p = model.params();
  auto expect = [&](const std::string& name, Shape shape) {
    const auto* e = p.find(name);
    ASSERT_NE(e, nullptr) << name;
    EXPECT_EQ(e->shape, shape) << name << " is " << e->shape.str();
  };
  expect("model.embed_tokens.weight", Shape{11, 8});
  expect("model.layers.0.input_layernorm.weight", Shape{8});
  expect("model.layers.0.self_attn.q_proj.weight", Shape{8, 8});
  expect("model.layers.0.self_attn.k_proj.weight", Shape{4, 8});  // 1 kv head of size 4
  expect("model.layers.0.self_attn.v_proj.weight", Shape{4, 8});
  expect("model.layers.0.self_attn.o_proj.weight", Shape{8, 8});
  expect("model.layers.1.post_attention_layernorm.weight", Shape{8});
  expect("model.layers.1.mlp.gate_proj.weight", Shape{12, 8});
  expect("model.layers.1.mlp.up_proj.weight", Shape{12, 8});
  expect("model.layers.1.mlp.down_proj.weight", Shape{8, 12});
  expect("model.norm.weight", Shape{8});
  expect("lm_head.weight", Shape{11, 8});
  EXPECT_EQ(p.entries().size(), 2u + 2 * 9 + 1);
}

TEST(ModelTest, Llama2SevenBHasItsParameterCountOnTheMetaDevice) {
  ModelConfig c;
  c.vocab_size = 32000;
  c.dim = 4096;
  c.n_layers = 32;
  c.n_heads = 32;
  c.n_kv_heads = 32;
  c.ffn_dim = 11008;
  c.max_seq_len = 4096;
  LlamaModel model(c);
  model.params().allocate(DType::kF32, Device::meta());
  EXPECT_EQ(model.params().numel(), 6738415616);  // Llama-2-7B, as published
}

}  // namespace
}  // namespace memento
