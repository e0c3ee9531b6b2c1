// The activation store as the schedule sees it: micro-batches in flight at once (pipeline 1F1B),
// the layer hooks a policy such as MEMO acts on, records that hold one step, and the factory that
// memory.activation_policy goes through.
#include <gtest/gtest.h>

#include <cstring>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/layers/linear.h"
#include "core/layers/rmsnorm.h"
#include "memory/activation_policy.h"
#include "memory/activation_store.h"
#include "testing/gradcheck.h"

namespace memento {
namespace {

using testing::random_tensor;

Tensor filled(Shape shape, float value) {
  Tensor t = Tensor::empty(shape, DType::kF32);
  for (int64_t i = 0; i < t.numel(); ++i) t.data<float>()[i] = value;
  return t;
}

bool same_bits(const TensorView& a, const TensorView& b) {
  return a.shape() == b.shape() && a.dtype() == b.dtype() &&
         std::memcmp(a.raw(), b.raw(), a.bytes()) == 0;
}

// A two-layer stage (norm, then a projection) whose forward and backward tell the store where
// each layer begins and ends, as the model's stages do.
struct TinyStage {
  static constexpr int64_t kC = 8;
  ParameterSet params;
  RMSNorm norm{params, "stage.norm", kC, 1e-5f};
  Linear proj{params, "stage.proj", kC, kC, 0.5f};

  TinyStage() {
    params.allocate(DType::kF32);
    params.initialize(7);
  }
  Tensor forward(ActivationStore& store, const Tensor& x) {
    LayerContext ctx{params, store, true};
    Tensor h;
    {
      LayerScope scope(store, "stage.norm", Phase::kForward);
      h = norm.forward(ctx, x);
    }
    LayerScope scope(store, "stage.proj", Phase::kForward);
    return proj.forward(ctx, h);
  }
  Tensor backward(ActivationStore& store, const Tensor& dy) {
    LayerContext ctx{params, store, true};
    Tensor dh;
    {
      LayerScope scope(store, "stage.proj", Phase::kBackward);
      dh = proj.backward(ctx, dy);
    }
    LayerScope scope(store, "stage.norm", Phase::kBackward);
    return norm.backward(ctx, dh);
  }
};

// 1F1B with two micro-batches in flight: F0 F1 B0 F2 B1 B2. Both live micro-batches save the same
// keys; each backward gets its own micro-batch's tensors back, so the input gradients and the
// accumulated weight gradients are those of running the micro-batches one after another.
TEST(ActivationStoreSchedule, TwoMicroBatchesInFlightIn1F1BOrderGiveTheSequentialBits) {
  constexpr int kMicro = 3;
  std::vector<Tensor> x, dy;
  for (int m = 0; m < kMicro; ++m) {
    x.push_back(random_tensor(Shape{2, 3, TinyStage::kC}, DType::kF32, 10 + m));
    dy.push_back(random_tensor(Shape{2, 3, TinyStage::kC}, DType::kF32, 20 + m));
  }

  TinyStage sequential;
  KeepActivationStore plain;
  std::vector<Tensor> dx_sequential;
  for (int m = 0; m < kMicro; ++m) {
    sequential.forward(plain, x[static_cast<size_t>(m)]);
    dx_sequential.push_back(sequential.backward(plain, dy[static_cast<size_t>(m)]));
  }

  TinyStage pipelined;
  KeepActivationStore store;
  std::vector<Tensor> dx(kMicro);
  size_t one_micro_batch = 0;
  auto forward = [&](int m) {
    store.set_micro_batch(m);
    pipelined.forward(store, x[static_cast<size_t>(m)]);
    if (m == 0) one_micro_batch = store.live_bytes();
  };
  auto backward = [&](int m) {
    store.set_micro_batch(m);
    dx[static_cast<size_t>(m)] = pipelined.backward(store, dy[static_cast<size_t>(m)]);
  };
  store.begin_step();
  forward(0);
  forward(1);
  EXPECT_EQ(store.live_bytes(), 2 * one_micro_batch);  // two micro-batches live, same keys
  backward(0);
  forward(2);
  backward(1);
  backward(2);
  EXPECT_TRUE(store.empty());
  store.end_step();

  for (int m = 0; m < kMicro; ++m) {
    EXPECT_TRUE(same_bits(dx[static_cast<size_t>(m)], dx_sequential[static_cast<size_t>(m)]))
        << "micro-batch " << m;
  }
  EXPECT_TRUE(same_bits(pipelined.params.flat_grads(), sequential.params.flat_grads()));

  // Records carry the micro-batch, the layer and the phase of each save and take.
  const std::vector<ActivationRecord>& r = store.last_step().records;
  ASSERT_EQ(r.size(), 3u * kMicro);  // norm/x, norm/rstd, proj/x per micro-batch
  EXPECT_EQ(store.last_step().peak_bytes, 2 * one_micro_batch);
  const std::vector<int64_t> micro_order = {0, 0, 0, 1, 1, 1, 2, 2, 2};  // F0 F1 F2 in save order
  for (size_t i = 0; i < r.size(); ++i) {
    EXPECT_EQ(r[i].micro_batch, micro_order[i]) << r[i].key;
    const std::string layer = r[i].key.substr(0, r[i].key.find('/'));
    EXPECT_EQ(r[i].layer, layer) << r[i].key;
    EXPECT_EQ(r[i].saved_phase, Phase::kForward) << r[i].key;
    EXPECT_EQ(r[i].taken_layer, layer) << r[i].key;
    EXPECT_EQ(r[i].taken_phase, Phase::kBackward) << r[i].key;
    EXPECT_GT(r[i].taken_at, r[i].saved_at) << r[i].key;
  }
  // Micro-batch 1 was saved before micro-batch 0 was taken: lifetimes overlap.
  EXPECT_LT(r[3].saved_at, r[0].taken_at);
}

TEST(ActivationStoreSchedule, SameKeyInTwoMicroBatchesIsFineAndEachGetsItsOwn) {
  KeepActivationStore store;
  store.set_micro_batch(0);
  store.save("block/x", filled(Shape{4}, 0.0f));
  store.set_micro_batch(1);
  store.save("block/x", filled(Shape{4}, 1.0f));
  EXPECT_EQ(store.live_bytes(), 32u);
  EXPECT_EQ(store.take("block/x").data<float>()[0], 1.0f);
  store.set_micro_batch(0);
  EXPECT_EQ(store.take("block/x").data<float>()[0], 0.0f);
  EXPECT_TRUE(store.empty());
}

TEST(ActivationStoreSchedule, SavesWithoutHooksAreNotChecked) {
  // No hooks called (evaluation, layer tests): no phase is known, nothing is enforced.
  KeepActivationStore store;
  store.save("a/x", filled(Shape{2}, 1.0f));
  (void)store.take("a/x");
  store.save("a/x", filled(Shape{2}, 1.0f));  // e.g. a save inside a backward without hooks
  EXPECT_EQ(store.records().back().saved_phase, std::nullopt);
  EXPECT_EQ(store.records().back().layer, "");
  (void)store.take("a/x");
}

TEST(ActivationStoreSchedule, RecomputeForwardInsideABackwardMaySave) {
  // A recompute policy re-runs a layer's forward inside the backward: the innermost phase decides.
  KeepActivationStore store;
  LayerScope backward(store, "block", Phase::kBackward);
  {
    LayerScope recompute(store, "block.attn", Phase::kForward);
    store.save("block.attn/q", filled(Shape{2}, 1.0f));
  }
  (void)store.take("block.attn/q");
  EXPECT_EQ(store.records()[0].layer, "block.attn");
  EXPECT_EQ(store.records()[0].taken_layer, "block");
}

TEST(ActivationStoreScheduleDeathTest, MisuseOfTheHooksIsFatal) {
  EXPECT_DEATH(
      {
        KeepActivationStore store;
        store.set_micro_batch(1);
        LayerScope scope(store, "model.layers.3.attn", Phase::kBackward);
        store.save("model.layers.3.attn.o_proj/x", filled(Shape{2}, 1.0f));
      },
      "model.layers.3.attn.o_proj/x saved in the backward of layer model.layers.3.attn "
      "\\(micro-batch 1\\)");
  EXPECT_DEATH(
      {
        KeepActivationStore store;
        store.set_micro_batch(2);
        store.save("x", filled(Shape{2}, 1.0f));
        store.save("x", filled(Shape{2}, 1.0f));
      },
      "saved twice.*x \\(micro-batch 2\\)");
  EXPECT_DEATH(
      {
        KeepActivationStore store;
        store.save("x", filled(Shape{2}, 1.0f));
        store.set_micro_batch(1);
        (void)store.take("x");  // micro-batch 0's, not 1's
      },
      "never saved.*x \\(micro-batch 1\\)");
  EXPECT_DEATH(
      {
        KeepActivationStore store;
        store.begin_layer("a", Phase::kForward);
        store.end_layer("a", Phase::kBackward);
      },
      "innermost open layer is a \\(forward\\)");
  EXPECT_DEATH(
      {
        KeepActivationStore store;
        store.end_layer("a", Phase::kForward);
      },
      "without begin_layer");
  EXPECT_DEATH(
      {
        KeepActivationStore store;
        LayerScope scope(store, "a", Phase::kForward);
        store.set_micro_batch(1);
      },
      "inside layer a");
}

TEST(ActivationStoreScheduleDeathTest, MisuseOfTheStepHooksIsFatal) {
  EXPECT_DEATH(
      {
        KeepActivationStore store;
        store.begin_step();
        store.set_micro_batch(1);
        store.save("leak", filled(Shape{2}, 1.0f));
        store.end_step();
      },
      "end_step\\(\\) with 1 live activations \\(one is leak of micro-batch 1\\)");
  EXPECT_DEATH(
      {
        KeepActivationStore store;
        store.end_step();
      },
      "without begin_step");
  EXPECT_DEATH(
      {
        KeepActivationStore store;
        store.begin_step();
        store.begin_step();
      },
      "twice");
}

// Steps of varying size, two micro-batches each: after every step the records are exactly that
// step's, the peak is that step's (not the run's), and the vectors' capacity stops growing.
TEST(ActivationStoreSchedule, RecordsHoldOneStepOverManySteps) {
  KeepActivationStore store;
  constexpr int kSteps = 1000;
  size_t capacity_at_10 = 0;
  for (int step = 0; step < kSteps; ++step) {
    const int64_t saves = 1 + step % 4;  // per micro-batch
    store.begin_step();
    for (int64_t m = 0; m < 2; ++m) {
      store.set_micro_batch(m);
      LayerScope scope(store, "layer", Phase::kForward);
      for (int64_t i = 0; i < saves; ++i) {
        store.save(detail::concat("layer/", i), filled(Shape{1 + i}, 1.0f));
      }
    }
    for (int64_t m = 1; m >= 0; --m) {
      store.set_micro_batch(m);
      LayerScope scope(store, "layer", Phase::kBackward);
      for (int64_t i = saves - 1; i >= 0; --i) (void)store.take(detail::concat("layer/", i));
    }
    store.end_step();
    ASSERT_TRUE(store.records().empty()) << step;
    const ActivationStepLog& last = store.last_step();
    ASSERT_EQ(last.step, step);
    ASSERT_EQ(last.records.size(), static_cast<size_t>(2 * saves)) << step;
    // Both micro-batches live at once: 2 * (1 + 2 + ... + saves) floats.
    ASSERT_EQ(last.peak_bytes, static_cast<size_t>(saves * (saves + 1) * 4)) << step;
    ASSERT_EQ(last.records.front().saved_at, 0) << step;  // events count from the step's start
    const size_t capacity = last.records.capacity() + store.records().capacity();
    if (step == 10) capacity_at_10 = capacity;
    if (step > 10) {
      ASSERT_EQ(capacity, capacity_at_10) << step;
    }
  }
  EXPECT_EQ(store.live_bytes(), 0u);
}

TEST(ActivationPolicy, KeepIsKnownAndBuildsAWorkingStore) {
  EXPECT_EQ(activation_policies(), (std::vector<std::string>{"keep"}));
  for (const std::string& name : activation_policies()) {
    const std::unique_ptr<RecordingActivationStore> store = make_activation_store(name);
    ASSERT_NE(store, nullptr);
    EXPECT_EQ(store->policy(), name);
    const Tensor x = filled(Shape{3}, 2.0f);
    store->save("a/x", x);
    EXPECT_EQ(store->live_bytes(), 12u);
    EXPECT_EQ(store->take("a/x").storage_id(), x.storage_id());
  }
}

TEST(ActivationPolicy, UnknownPolicyIsAConfigErrorListingTheKnownOnes) {
  try {
    (void)make_activation_store("swap");
    FAIL() << "no error for an unknown policy";
  } catch (const ConfigError& e) {
    EXPECT_STREQ(e.what(), "memory.activation_policy: unknown policy 'swap'; known policies: keep");
  }
}

}  // namespace
}  // namespace memento
