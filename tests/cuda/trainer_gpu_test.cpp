// The whole trainer on the GPU: a small hybrid model (linear and softmax attention) trained 50
// steps on the CPU in f32, on the GPU in f32 and on the GPU in bf16 mixed precision, from the
// same initial weights and batches. The GPU curves must follow the CPU one (f32 tightly, bf16
// within bf16 tolerance), the loss must fall, and a GPU run stopped and resumed from its
// checkpoint must continue exactly as the uninterrupted run.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "launch/e2e_testing.h"
#include "launch/trainer.h"
#include "tests/cuda/cuda_testing.h"

namespace memento {
namespace {

using testing::CudaTest;
using testing::scratch_dir;

constexpr int64_t kSteps = 50;

// Deterministic English-like text from a small grammar: learnable structure at every scale
// (spelling, word order, punctuation) without a corpus file on the GPU machine.
std::string grammar_text(size_t bytes) {
  const char* subjects[] = {"the cat",     "a dog",        "my neighbour", "the old man",
                            "every child", "the engineer", "a small bird", "the teacher"};
  const char* verbs[] = {"sees",    "likes",     "carries", "paints",
                         "follows", "remembers", "finds",   "builds"};
  const char* objects[] = {"the red ball",  "a long road", "the quiet river", "an open door",
                           "the tall tree", "a warm coat", "the bright lamp", "a wooden box"};
  const char* endings[] = {".", " today.", " again.", " every morning.", "!", " slowly."};
  std::string text;
  uint64_t state = 12345;
  auto next = [&](uint64_t n) {
    state = state * 6364136223846793005ULL + 1442695040888963407ULL;
    return (state >> 33) % n;
  };
  while (text.size() < bytes) {
    std::string s = std::string(subjects[next(8)]) + " " + verbs[next(8)] + " " + objects[next(8)] +
                    endings[next(6)] + "\n";
    s[0] = static_cast<char>(s[0] - 'a' + 'A');
    text += s;
  }
  return text;
}

Config hybrid_config(const std::string& dir, const std::string& device, const std::string& dtype) {
  const std::string yaml =
      "run: {name: gpu-curve, out_dir: " + dir + ", seed: 11}\n" +
      "model: {vocab_size: 256, dim: 128, n_layers: 2, n_heads: 4, n_kv_heads: 2, ffn_dim: 256, "
      "max_seq_len: 64, layer_pattern: [linear, softmax], device: " +
      device + ", dtype: " + dtype + "}\n" + "data: {train: " + dir + "/../train.bin, val: " + dir +
      "/../val.bin}\n" +
      "train: {seq_len: 64, micro_batch: 8, global_batch: 16, steps: " + std::to_string(kSteps) +
      ", eval_every: 0, threads: 2, peak_tflops: 1}\n" +
      "optim: {lr: 1.0e-3, min_lr: 1.0e-4, warmup_steps: 5}\n" +
      "checkpoint: {every: 0, keep: 2, at_end: false}\n";
  return parse_config(yaml, {}, "test");
}

class TrainerGpuTest : public CudaTest {
 protected:
  static std::string corpus() {
    static const std::string root = [] {
      const std::string dir = scratch_dir("trainer_gpu");
      const std::string text = grammar_text(400000);
      const size_t split = text.size() * 9 / 10;
      testing::write_byte_tokens(dir + "/train.bin", text.substr(0, split));
      testing::write_byte_tokens(dir + "/val.bin", text.substr(split));
      return dir;
    }();
    return root;
  }

  static std::vector<double> losses(const std::vector<StepMetrics>& history) {
    std::vector<double> out;
    for (const auto& m : history) out.push_back(m.loss);
    return out;
  }
};

double max_relative_gap(const std::vector<double>& a, const std::vector<double>& ref) {
  double worst = 0;
  for (size_t i = 0; i < ref.size(); ++i) worst = std::max(worst, std::abs(a[i] - ref[i]) / ref[i]);
  return worst;
}

TEST_F(TrainerGpuTest, FiftyStepsFollowTheCpuLossCurve) {
  const std::string root = corpus();
  Trainer cpu(hybrid_config(root + "/cpu", "cpu", "f32"), Resume::kNo);
  const std::vector<double> ref = losses(cpu.run());
  Trainer gpu32(hybrid_config(root + "/gpu-f32", "cuda", "f32"), Resume::kNo);
  const std::vector<double> f32 = losses(gpu32.run());
  Trainer gpu16(hybrid_config(root + "/gpu-bf16", "cuda", "bf16"), Resume::kNo);
  const std::vector<double> bf16 = losses(gpu16.run());
  ASSERT_EQ(ref.size(), static_cast<size_t>(kSteps));
  ASSERT_EQ(f32.size(), ref.size());
  ASSERT_EQ(bf16.size(), ref.size());

  std::printf("step   cpu f32    gpu f32    gpu bf16\n");
  for (size_t i = 0; i < ref.size(); ++i)
    std::printf("%4zu   %.5f    %.5f    %.5f\n", i + 1, ref[i], f32[i], bf16[i]);
  const double gap32 = max_relative_gap(f32, ref);
  const double gap16 = max_relative_gap(bf16, ref);
  std::printf("[maxerr] loss_curve/f32/50steps %.3e\n[maxerr] loss_curve/bf16/50steps %.3e\n",
              gap32, gap16);
  // The first step sees identical weights and data: only the arithmetic differs.
  EXPECT_LT(std::abs(f32[0] - ref[0]) / ref[0], 1e-5);
  EXPECT_LT(std::abs(bf16[0] - ref[0]) / ref[0], 1e-2);
  // Over 50 updates the runs drift apart only as far as their rounding allows. Training amplifies
  // rounding differences: rounding every op's output to bf16 in the CPU ops themselves (an
  // experiment, not shipped) moved this curve by up to 0.8% at this learning rate and 5.7% at
  // lr 3e-3, where the GPU's bf16 run measured 6.4%. The bounds leave room for that, no more.
  EXPECT_LT(gap32, 1e-2) << "GPU f32 left the CPU loss curve";
  EXPECT_LT(gap16, 3e-2) << "GPU bf16 left the CPU loss curve";
  // And they learn: the loss falls well below its start (about log 256 = 5.5).
  EXPECT_LT(ref.back(), 0.6 * ref.front());
  EXPECT_LT(bf16.back(), 0.6 * bf16.front());
}

TEST_F(TrainerGpuTest, StopAndResumeOnTheGpuContinuesExactly) {
  const std::string root = corpus();
  Trainer straight(hybrid_config(root + "/straight", "cuda", "bf16"), Resume::kNo);
  const std::vector<double> full = losses(straight.run(20));
  ASSERT_EQ(full.size(), 20u);
  {
    Trainer first(hybrid_config(root + "/resumed", "cuda", "bf16"), Resume::kNo);
    ASSERT_EQ(first.run(10).size(), 10u);  // saves a checkpoint at step 10
  }
  Trainer second(hybrid_config(root + "/resumed", "cuda", "bf16"), Resume::kLatest);
  ASSERT_EQ(second.step(), 10);
  const std::vector<double> rest = losses(second.run(20));
  ASSERT_EQ(rest.size(), 10u);
  for (size_t i = 0; i < rest.size(); ++i)
    EXPECT_EQ(rest[i], full[10 + i]) << "step " << 11 + i << " after resuming on the GPU";
}

TEST_F(TrainerGpuTest, AGpuCheckpointResumesOnTheCpu) {
  const std::string root = corpus();
  {
    Trainer gpu(hybrid_config(root + "/moved", "cuda", "bf16"), Resume::kNo);
    ASSERT_EQ(gpu.run(10).size(), 10u);
  }
  // The same run directory, now on the CPU in f32: fp32 masters and AdamW states carry over.
  Trainer cpu(hybrid_config(root + "/moved", "cpu", "f32"), Resume::kLatest);
  ASSERT_EQ(cpu.step(), 10);
  const std::vector<double> rest = losses(cpu.run(12));
  ASSERT_EQ(rest.size(), 2u);
  Trainer gpu(hybrid_config(root + "/moved-ref", "cuda", "bf16"), Resume::kNo);
  const std::vector<double> ref = losses(gpu.run(12));
  EXPECT_LT(std::abs(rest[0] - ref[10]) / ref[10], 2e-2);
}

}  // namespace
}  // namespace memento
