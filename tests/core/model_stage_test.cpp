// The model as pipeline stages (issue 10, Must show 3): the tiny model split into two stages in one
// process, stage 0 = embedding + layers [0, 2) and stage 1 = layers [2, 4) + head, runs two
// micro-batches in 1F1B order through one activation store and gives the one-stage model's loss
// and every gradient bit for bit. Also: the ranges each backward reports final tile its stage's
// flat buffer once and are final when reported; the stage boundary's shapes; bad stage layers.
#include "core/model/model_stage.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstddef>
#include <cstring>
#include <map>
#include <set>
#include <string>
#include <tuple>
#include <vector>

#include "core/model/llama.h"
#include "core/rng.h"
#include "memory/activation_store.h"
#include "testing/expect_error.h"

namespace memento {
namespace {

constexpr int64_t kB = 2;   // sequences per micro-batch
constexpr int64_t kT = 32;  // shorter than tiny's 128, to keep the test fast
constexpr int64_t kMicroBatches = 2;
constexpr uint64_t kSeed = 1234;

struct Case {
  const char* name;
  std::vector<AttentionKind> pattern;
  DType dtype;
};

// configs/tiny.yaml's model section, with the case's layer pattern and dtype.
ModelConfig tiny_config(const Case& c) {
  ModelConfig m;
  m.vocab_size = 2048;
  m.dim = 192;
  m.n_layers = 4;
  m.n_heads = 6;
  m.n_kv_heads = 2;
  m.ffn_dim = 512;
  m.max_seq_len = 128;
  m.tie_embeddings = false;
  m.layer_pattern = c.pattern;
  m.linear_chunk = 16;  // several chunks within kT (tiny's 64 would make one)
  m.dtype = c.dtype;
  return m;
}

Tensor token_tensor(int64_t V, uint64_t stream) {
  Tensor t = Tensor::empty(Shape{kB, kT}, DType::kI32);
  for (int64_t i = 0; i < t.numel(); ++i)
    t.data<int32_t>()[i] = static_cast<int32_t>(philox4x32(kSeed, stream, i)[0] % V);
  return t;
}

struct MicroBatch {
  Tensor tokens;   // (B, T) i32
  Tensor targets;  // (B, T) i32
};

MicroBatch micro_batch(int64_t V, int64_t mb) {
  return {token_tensor(V, 10 + 2 * mb), token_tensor(V, 11 + 2 * mb)};
}

// What a pipeline send/recv delivers: the same values in a buffer of the receiver's.
Tensor handed_over(const Tensor& t) {
  Tensor out = Tensor::empty_like(t);
  copy(t, out);
  return out;
}

bool same_bytes(const TensorView& a, const TensorView& b) {
  return a.dtype() == b.dtype() && a.shape() == b.shape() &&
         std::memcmp(a.raw(), b.raw(), a.bytes()) == 0;
}

// Records the ranges one backward reports final, with their gradients at the moment of the report.
class FinalRanges {
 public:
  explicit FinalRanges(const ParameterSet& params) : params_(params) {}

  ModelStage::GradsFinalHook hook() {
    return [this](FlatRange r) {
      ranges_.push_back(r);
      const TensorView g = params_.flat_grads().flat_range(r.begin, Shape{r.size()});
      const auto* bytes = static_cast<const std::byte*>(g.raw());
      snapshots_.emplace_back(bytes, bytes + g.bytes());
    };
  }

  // After the backward: the ranges tile [0, padded_numel) exactly once, and no gradient changed
  // after its range was reported (a reducer may start reducing it at once).
  void expect_tiled_and_final(const std::string& what) const {
    std::vector<FlatRange> sorted = ranges_;
    std::sort(sorted.begin(), sorted.end(),
              [](FlatRange a, FlatRange b) { return a.begin < b.begin; });
    int64_t covered = 0;
    for (const FlatRange& r : sorted) {
      EXPECT_EQ(r.begin, covered) << what << ": a gap or an overlap at " << covered;
      EXPECT_LT(r.begin, r.end) << what << ": an empty range at " << r.begin;
      covered = std::max(covered, r.end);
    }
    EXPECT_EQ(covered, params_.padded_numel()) << what << ": the ranges stop short of the end";
    for (size_t i = 0; i < ranges_.size(); ++i) {
      const FlatRange r = ranges_[i];
      const TensorView g = params_.flat_grads().flat_range(r.begin, Shape{r.size()});
      EXPECT_EQ(std::memcmp(g.raw(), snapshots_[i].data(), g.bytes()), 0)
          << what << ": gradients of [" << r.begin << ", " << r.end
          << ") changed after they were reported final";
    }
  }

 private:
  const ParameterSet& params_;
  std::vector<FlatRange> ranges_;
  std::vector<std::vector<std::byte>> snapshots_;
};

// (micro-batch, layer) of every entry live in `store` now.
std::set<std::pair<int64_t, std::string>> live_layers(const KeepActivationStore& store) {
  std::set<std::pair<int64_t, std::string>> live;
  for (const ActivationRecord& r : store.records())
    if (r.taken_at < 0) live.insert({r.micro_batch, r.layer});
  return live;
}

// (micro-batch, key, shape, bytes) of every record of a step, in a canonical order.
std::multiset<std::tuple<int64_t, std::string, std::string, size_t>> record_set(
    const std::vector<ActivationRecord>& records) {
  std::multiset<std::tuple<int64_t, std::string, std::string, size_t>> set;
  for (const ActivationRecord& r : records)
    set.insert({r.micro_batch, r.key, r.shape.str(), r.bytes});
  return set;
}

class ModelStageTest : public ::testing::TestWithParam<Case> {};

TEST_P(ModelStageTest, TwoStagesIn1F1BOrderGiveTheOneStageLossAndGradientsBitForBit) {
  const ModelConfig config = tiny_config(GetParam());
  const DType dtype = config.dtype;
  const int64_t C = config.dim, V = config.vocab_size;
  const double grad_scale = 1.0 / static_cast<double>(kMicroBatches * kB * kT);
  const MicroBatch batches[kMicroBatches] = {micro_batch(V, 0), micro_batch(V, 1)};

  LlamaModel whole(config);
  ModelStage s0(config, StageLayers{0, 2, true, false});
  ModelStage s1(config, StageLayers{2, 4, false, true});
  for (ParameterSet* p : {&whole.params(), &s0.params(), &s1.params()}) {
    p->allocate(dtype);
    p->initialize(kSeed);
  }

  // Every parameter of the whole model is in exactly one stage, initialised to the same values.
  ASSERT_EQ(whole.params().entries().size(),
            s0.params().entries().size() + s1.params().entries().size());
  const auto stage_of = [&](const std::string& name) -> ParameterSet* {
    const bool in0 = s0.params().find(name) != nullptr;
    const bool in1 = s1.params().find(name) != nullptr;
    EXPECT_NE(in0, in1) << name << " is in " << (in0 ? "both stages" : "neither stage");
    return in0 ? &s0.params() : &s1.params();
  };
  for (size_t i = 0; i < whole.params().entries().size(); ++i) {
    const auto& e = whole.params().entries()[i];
    ParameterSet* stage = stage_of(e.name);
    const auto* se = stage->find(e.name);
    ASSERT_NE(se, nullptr) << e.name;
    const auto si = static_cast<int>(se - stage->entries().data());
    EXPECT_TRUE(
        same_bytes(whole.params().value(ParamRef{static_cast<int>(i)}), stage->value(ParamRef{si})))
        << e.name << " initialised differently in its stage";
  }
  EXPECT_NE(s0.params().find("model.embed_tokens.weight"), nullptr);
  EXPECT_NE(s0.params().find("model.layers.1.mlp.down_proj.weight"), nullptr);
  EXPECT_NE(s1.params().find("model.layers.2.input_layernorm.weight"), nullptr);
  EXPECT_NE(s1.params().find("lm_head.weight"), nullptr);

  // The one-stage model: micro-batch 0, then micro-batch 1.
  KeepActivationStore whole_store;
  whole.params().zero_grads();
  whole_store.begin_step();
  double whole_loss = 0;
  for (int64_t mb = 0; mb < kMicroBatches; ++mb) {
    FinalRanges final_ranges(whole.params());
    whole_loss += whole
                      .forward_backward(whole_store, batches[mb].tokens, batches[mb].targets,
                                        grad_scale, final_ranges.hook(), mb)
                      .loss_sum;
    final_ranges.expect_tiled_and_final("one stage, micro-batch " + std::to_string(mb));
  }
  whole_store.end_step();

  // Two stages through one store, in 1F1B order: stage 0 runs F0 F1 B0 B1, stage 1 (the last)
  // F0 B0 F1 B1, interleaved as the dependencies between them allow.
  KeepActivationStore store;
  s0.params().zero_grads();
  s1.params().zero_grads();
  store.begin_step();
  double split_loss = 0;
  const auto backward = [&](ModelStage& stage, int64_t mb, const Tensor& dout,
                            const std::string& what) {
    FinalRanges final_ranges(stage.params());
    Tensor dx = stage.backward(store, mb, dout, final_ranges.hook());
    final_ranges.expect_tiled_and_final(what);
    return dx;
  };

  const Tensor out0 = s0.forward(store, 0, batches[0].tokens);  // s0.F(0)
  EXPECT_EQ(out0.shape(), (Shape{kB, kT, C}));
  const size_t stage0_bytes = store.live_bytes();
  ASSERT_GT(stage0_bytes, 0u);
  const Tensor logits0 = s1.forward(store, 0, handed_over(out0));  // s1.F(0)
  EXPECT_EQ(logits0.shape(), (Shape{kB, kT, V}));
  const size_t stage1_bytes = store.live_bytes() - stage0_bytes;
  ASSERT_GT(stage1_bytes, 0u);
  split_loss += loss_and_gradient(logits0, batches[0].targets, grad_scale).loss_sum;  // loss(0)

  const Tensor out1 = s0.forward(store, 1, batches[1].tokens);  // s0.F(1)
  // Stage 0 now holds both micro-batches' activations, stage 1 micro-batch 0's.
  EXPECT_EQ(store.live_bytes(), 2 * stage0_bytes + stage1_bytes);
  const auto live = live_layers(store);
  for (const char* layer : {"model.embed_tokens", "model.layers.0", "model.layers.1"}) {
    EXPECT_TRUE(live.contains({0, layer})) << "micro-batch 0 holds nothing in " << layer;
    EXPECT_TRUE(live.contains({1, layer})) << "micro-batch 1 holds nothing in " << layer;
  }
  for (const char* layer : {"model.layers.2", "model.layers.3", "lm_head"}) {
    EXPECT_TRUE(live.contains({0, layer})) << "micro-batch 0 holds nothing in " << layer;
    EXPECT_FALSE(live.contains({1, layer})) << "micro-batch 1 ran ahead into " << layer;
  }

  const Tensor d0 = backward(s1, 0, logits0, "stage 1, micro-batch 0");  // s1.B(0)
  EXPECT_EQ(d0.shape(), (Shape{kB, kT, C}));
  EXPECT_EQ(d0.dtype(), dtype);
  EXPECT_EQ(store.live_bytes(), 2 * stage0_bytes);
  const Tensor none = backward(s0, 0, handed_over(d0), "stage 0, micro-batch 0");  // s0.B(0)
  EXPECT_FALSE(none.defined()) << "a stage with the embedding returned an input gradient";
  EXPECT_EQ(store.live_bytes(), stage0_bytes);

  const Tensor logits1 = s1.forward(store, 1, handed_over(out1));  // s1.F(1)
  EXPECT_EQ(store.live_bytes(), stage0_bytes + stage1_bytes);
  split_loss += loss_and_gradient(logits1, batches[1].targets, grad_scale).loss_sum;  // loss(1)
  const Tensor d1 = backward(s1, 1, logits1, "stage 1, micro-batch 1");               // s1.B(1)
  EXPECT_EQ(d1.shape(), (Shape{kB, kT, C}));
  backward(s0, 1, handed_over(d1), "stage 0, micro-batch 1");  // s0.B(1)
  EXPECT_EQ(store.live_bytes(), 0u);
  EXPECT_TRUE(store.empty());
  store.end_step();

  // The split saves what the whole model saves, and holds at most one more micro-batch of stage 0.
  EXPECT_EQ(record_set(store.last_step().records), record_set(whole_store.last_step().records));
  EXPECT_EQ(whole_store.last_step().peak_bytes, stage0_bytes + stage1_bytes);
  EXPECT_EQ(store.last_step().peak_bytes, 2 * stage0_bytes + stage1_bytes);
  for (const ActivationRecord& r : store.last_step().records) {
    EXPECT_EQ(r.saved_phase, Phase::kForward) << r.key;
    EXPECT_EQ(r.taken_phase, Phase::kBackward) << r.key;
    EXPECT_GE(r.taken_at, 0) << r.key;
  }

  // The loss and every gradient, bit for bit.
  EXPECT_EQ(std::memcmp(&whole_loss, &split_loss, sizeof(double)), 0)
      << "one stage " << whole_loss << ", two stages " << split_loss;
  int differing = 0;
  for (size_t i = 0; i < whole.params().entries().size(); ++i) {
    const auto& e = whole.params().entries()[i];
    ParameterSet* stage = stage_of(e.name);
    const auto si = static_cast<int>(stage->find(e.name) - stage->entries().data());
    const TensorView expected = whole.params().grad(ParamRef{static_cast<int>(i)});
    const TensorView got = stage->grad(ParamRef{si});
    if (!same_bytes(expected, got)) {
      ++differing;
      ADD_FAILURE() << "gradient of " << e.name << " differs between one stage and two";
    }
  }
  EXPECT_EQ(differing, 0);
  // Gradients are not all zero (the comparison would then prove nothing).
  const TensorView g = s0.params().grad(ParamRef{0});  // the embedding
  bool nonzero = false;
  for (int64_t i = 0; i < g.numel() && !nonzero; ++i)
    nonzero = dtype == DType::kF64 ? g.data<double>()[i] != 0 : g.data<float>()[i] != 0;
  EXPECT_TRUE(nonzero) << "the embedding's gradient is all zero";
}

INSTANTIATE_TEST_SUITE_P(
    TinyModel, ModelStageTest,
    ::testing::Values(
        Case{"softmax_f32", {AttentionKind::kSoftmax}, DType::kF32},
        Case{"hybrid_f32", {AttentionKind::kLinear, AttentionKind::kSoftmax}, DType::kF32},
        Case{"softmax_f64", {AttentionKind::kSoftmax}, DType::kF64},
        Case{"hybrid_f64", {AttentionKind::kLinear, AttentionKind::kSoftmax}, DType::kF64}),
    [](const ::testing::TestParamInfo<Case>& param) { return std::string(param.param.name); });

TEST(ModelStageLayersTest, RangesOutsideTheModelOrHoldingNothingAreConfigErrors) {
  const ModelConfig config =
      tiny_config(Case{"softmax_f32", {AttentionKind::kSoftmax}, DType::kF32});
  const auto build = [&](StageLayers layers) { ModelStage stage(config, layers); };
  using testing::expect_error_naming;
  expect_error_naming<ConfigError>([&] { build({3, 2, false, false}); }, "layers [3, 2)");
  expect_error_naming<ConfigError>([&] { build({-1, 2, true, false}); }, "layers [-1, 2)");
  expect_error_naming<ConfigError>([&] { build({2, 5, false, true}); }, "layers [2, 5)");
  expect_error_naming<ConfigError>([&] { build({2, 2, false, false}); }, "hold nothing");
  // The edges that are stages: the embedding alone, the head alone, everything (end = -1).
  EXPECT_NO_THROW(build({0, 0, true, false}));
  EXPECT_NO_THROW(build({4, 4, false, true}));
  EXPECT_NO_THROW(build({1, -1, false, true}));
  EXPECT_EQ(ModelStage(config, {1, -1, false, true}).layers().end, 4);
}

TEST(ModelStageLayersTest, ATiedHeadWithoutTheEmbeddingIsAConfigError) {
  ModelConfig config = tiny_config(Case{"softmax_f32", {AttentionKind::kSoftmax}, DType::kF32});
  config.tie_embeddings = true;
  testing::expect_error_naming<ConfigError>(
      [&] {
        ModelStage stage(config, StageLayers{2, 4, false, true});
      },
      "tie_embeddings");
  // Tied is fine where the head and the embedding share the stage, or the head is elsewhere.
  EXPECT_NO_THROW(ModelStage(config, StageLayers{0, 4, true, true}));
  EXPECT_NO_THROW(ModelStage(config, StageLayers{0, 2, true, false}));
  EXPECT_NO_THROW(ModelStage(config, StageLayers{2, 4, false, false}));
}

}  // namespace
}  // namespace memento
