// `trainer --init-from-hf DIR` (checkpoint.init_from_hf) starts a run from exported weights: a
// run trained, exported with export_hf and started again from the export holds the same
// parameters bit for bit before its first step; a resumed run keeps its checkpoint instead.
#include <gtest/gtest.h>

#include <cstring>
#include <fstream>

#include "launch/config.h"
#include "launch/e2e_testing.h"
#include "launch/hf_weights.h"
#include "launch/trainer.h"

namespace memento {
namespace {

std::string make_run(const std::string& dir) {
  testing::write_fortunes_corpus(dir);
  const std::string path = dir + "/config.yaml";
  std::ofstream(path) << "run: {out_dir: " << dir << "/run, seed: 5}\n"
                      << "model: {vocab_size: 256, dim: 32, n_layers: 2, n_heads: 4, "
                         "n_kv_heads: 2, ffn_dim: 64, max_seq_len: 32}\n"
                      << "data: {train: " << dir << "/train.bin, val: " << dir << "/val.bin}\n"
                      << "train: {seq_len: 16, micro_batch: 2, global_batch: 4, steps: 3, "
                         "eval_every: 0, threads: 1, peak_tflops: 1}\n"
                      << "optim: {warmup_steps: 1}\n";
  return path;
}

bool same_bits(const TensorView& a, const TensorView& b) {
  return a.bytes() == b.bytes() && std::memcmp(a.raw(), b.raw(), a.bytes()) == 0;
}

TEST(InitFromHfTest, ARunStartsFromTheExportedWeightsBitForBit) {
  const std::string dir = testing::scratch_dir("init_from_hf");
  const std::string config_path = make_run(dir);
  Trainer trained(load_config(config_path), Resume::kNo);
  trained.run();
  export_hf(dir + "/run/checkpoints", dir + "/hf");

  const Config fresh = load_config(config_path, {"run.out_dir=" + dir + "/fresh", "run.seed=99",
                                                 "checkpoint.init_from_hf=" + dir + "/hf"});
  Trainer started(fresh, Resume::kNo);
  EXPECT_EQ(started.step(), 0);
  EXPECT_TRUE(
      same_bits(started.model().params().flat_values(), trained.model().params().flat_values()));
  // Without the key, seed 99 gives another model: the comparison above can fail.
  Trainer seeded(load_config(config_path, {"run.out_dir=" + dir + "/seeded", "run.seed=99"}),
                 Resume::kNo);
  EXPECT_FALSE(
      same_bits(seeded.model().params().flat_values(), trained.model().params().flat_values()));
}

TEST(InitFromHfTest, TheCommandLineFlagSetsTheKeyAndAResumedRunIgnoresIt) {
  const std::string dir = testing::scratch_dir("init_from_hf_cli");
  const std::string config = make_run(dir);
  const std::string trainer = testing::trainer_binary() + " --config " + config;
  ASSERT_EQ(testing::run_command(trainer + " 2>&1").exit_code, 0);
  export_hf(dir + "/run/checkpoints", dir + "/hf");
  const auto started = testing::run_command(trainer + " --set run.out_dir=" + dir +
                                            "/fresh --init-from-hf " + dir + "/hf 2>&1");
  ASSERT_EQ(started.exit_code, 0) << started.output;
  EXPECT_NE(started.output.find("initialised from the Hugging Face weights in " + dir + "/hf"),
            std::string::npos)
      << started.output;
  const auto resumed = testing::run_command(
      trainer + " --resume --set train.steps=4 --init-from-hf=" + dir + "/hf 2>&1");
  ASSERT_EQ(resumed.exit_code, 0) << resumed.output;
  EXPECT_NE(resumed.output.find("is not used: the run resumed at step 3"), std::string::npos)
      << resumed.output;
  const auto missing =
      testing::run_command(trainer + " --set run.out_dir=" + dir + "/missing --init-from-hf " +
                           dir + "/nowhere 2>&1 >/dev/null");
  EXPECT_EQ(missing.exit_code, 1) << missing.output;
  EXPECT_NE(missing.output.find(dir + "/nowhere"), std::string::npos) << missing.output;
}

}  // namespace
}  // namespace memento
