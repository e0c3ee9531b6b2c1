// End-to-end training in one process: loss falls on real text, and stop + resume reproduces an
// uninterrupted run bit for bit.
#include "launch/trainer.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>

#include "launch/e2e_testing.h"
#include "launch/run_plan.h"

namespace memento {
namespace {

using testing::scratch_dir;

Config small_config(const std::string& dir, const std::string& extra = "") {
  const std::string yaml = "run: {name: e2e, out_dir: " + dir + ", seed: 7}\n" +
                           "model: {vocab_size: 256, dim: 32, n_layers: 2, n_heads: 4, "
                           "n_kv_heads: 2, ffn_dim: 64, max_seq_len: 64, "
                           "layer_pattern: [linear, softmax]}\n" +
                           "data: {train: " + dir + "/../train.bin, val: " + dir +
                           "/../val.bin}\n" +
                           "train: {seq_len: 16, micro_batch: 2, global_batch: 4, steps: 8, "
                           "eval_every: 0, threads: 2}\n" +
                           "optim: {lr: 1.0e-2, min_lr: 1.0e-3, warmup_steps: 2}\n" +
                           "checkpoint: {every: 0, keep: 3}\n" + extra;
  return parse_config(yaml, {}, "test");
}

void write_corpus(const std::string& root, size_t bytes) {
  const std::string text = testing::fortunes_text(bytes);
  ASSERT_GT(text.size(), bytes / 2) << "the fortunes corpus is missing (scripts/install_deps.sh)";
  const size_t split = text.size() * 9 / 10;
  testing::write_byte_tokens(root + "/train.bin", text.substr(0, split));
  testing::write_byte_tokens(root + "/val.bin", text.substr(split));
}

bool same_bytes(const TensorView& a, const TensorView& b) {
  return a.bytes() == b.bytes() && std::memcmp(a.raw(), b.raw(), a.bytes()) == 0;
}

TEST(TrainerTest, StopAndResumeIsBitIdenticalToAnUninterruptedRun) {
  const std::string root = scratch_dir("trainer_resume");
  write_corpus(root, 200000);

  Trainer straight(small_config(root + "/straight"), Resume::kNo);
  const std::vector<StepMetrics> full = straight.run();
  ASSERT_EQ(full.size(), 8u);

  {
    Trainer first_half(small_config(root + "/resumed"), Resume::kNo);
    EXPECT_EQ(first_half.run(4).size(), 4u);
  }
  Trainer second_half(small_config(root + "/resumed"), Resume::kLatest);
  EXPECT_EQ(second_half.step(), 4);
  const std::vector<StepMetrics> rest = second_half.run();
  ASSERT_EQ(rest.size(), 4u);

  for (size_t i = 0; i < rest.size(); ++i) {
    EXPECT_EQ(rest[i].step, full[4 + i].step);
    EXPECT_EQ(rest[i].loss, full[4 + i].loss) << "step " << rest[i].step;
    EXPECT_EQ(rest[i].grad_norm, full[4 + i].grad_norm) << "step " << rest[i].step;
  }
  EXPECT_TRUE(same_bytes(straight.model().params().flat_values(),
                         second_half.model().params().flat_values()));
  const auto states_a = straight.optimizer().states(), states_b = second_half.optimizer().states();
  ASSERT_EQ(states_a.size(), states_b.size());
  for (size_t i = 0; i < states_a.size(); ++i)
    EXPECT_TRUE(same_bytes(states_a[i].values, states_b[i].values)) << states_a[i].name;
}

TEST(TrainerTest, ResumeRefusesACheckpointOfAnotherModel) {
  const std::string root = scratch_dir("trainer_other_model");
  write_corpus(root, 50000);
  { Trainer(small_config(root + "/run"), Resume::kNo).run(2); }
  try {
    Config wider = small_config(root + "/run");
    wider.model.dim = 64;
    wider.model.ffn_dim = 128;
    Trainer resumed(wider, Resume::kLatest);
    FAIL() << "resuming a dim-32 checkpoint with dim 64 must fail";
  } catch (const CheckpointError& e) {
    EXPECT_NE(std::string(e.what()).find("model.dim"), std::string::npos) << e.what();
  }
}

TEST(TrainerTest, ValidationLossFallsOnRealText) {
  const std::string root = scratch_dir("trainer_learns");
  write_corpus(root, 400000);
  Config config = small_config(root + "/run");
  config.model.dim = 64;
  config.model.ffn_dim = 128;
  config.train.seq_len = 64;
  config.train.micro_batch = 8;
  config.train.global_batch = 8;
  config.train.steps = 80;
  config.optim.lr = 3e-3;
  config.optim.min_lr = 3e-4;
  config.optim.warmup_steps = 5;
  Trainer trainer(config, Resume::kNo);
  const double before = trainer.evaluate();
  EXPECT_NEAR(before, std::log(256.0), 0.3) << "an untrained model is near uniform over bytes";
  trainer.run();
  const double after = trainer.evaluate();
  EXPECT_LT(after, 0.65 * before) << "validation loss " << before << " -> " << after;
}

// The activation store's records hold one step: after 1, 3 and 6 steps the trainer's store has
// the same records (every micro-batch of one step), and they match the dry run's list.
TEST(TrainerTest, TheActivationStoreKeepsOneStepOfRecords) {
  const std::string root = scratch_dir("trainer_store_records");
  write_corpus(root, 40000);
  Trainer t(small_config(root + "/run"), Resume::kNo);
  std::vector<size_t> sizes;
  for (int64_t stop : {1, 3, 6}) {
    t.run(stop);
    sizes.push_back(t.activation_store().last_step().records.size());
    EXPECT_TRUE(t.activation_store().records().empty()) << "records left between steps";
  }
  // 2 micro-batches per step (global 4, micro 2): twice the dry run's per-micro-batch list.
  const size_t per_micro = plan_run(small_config(root + "/run"), "cpu").memory.activations.size();
  ASSERT_GT(per_micro, 0u);
  for (size_t n : sizes) EXPECT_EQ(n, 2 * per_micro);
}

}  // namespace
}  // namespace memento
