// The trainer binary as a user runs it: bad input ends with a one-line error naming the key,
// file or tensor and a non-zero exit; the 7B dry run prints the plan without allocating it.
#include <gtest/gtest.h>
#include <sys/resource.h>

#include <fstream>
#include <regex>

#include "checkpoint/hdf5_checkpoint.h"
#include "launch/e2e_testing.h"

namespace memento {
namespace {

using testing::run_command;
using testing::scratch_dir;
using testing::trainer_binary;

std::string write_config(const std::string& dir, const std::string& tweak) {
  const std::string path = dir + "/config.yaml";
  std::ofstream(path) << "run: {out_dir: " << dir << "/run}\n"
                      << "model: {vocab_size: 256, dim: 32, n_layers: 1, n_heads: 4, "
                         "n_kv_heads: 4, ffn_dim: 64, max_seq_len: 32}\n"
                      << "data: {train: " << dir << "/train.bin, val: " << dir << "/val.bin}\n"
                      << "train: {seq_len: 16, micro_batch: 2, global_batch: 4, steps: 2, "
                         "eval_every: 0, threads: 1}\n"
                      << "optim: {warmup_steps: 1}\n"
                      << tweak;
  return path;
}

void write_corpus(const std::string& dir) { testing::write_fortunes_corpus(dir); }

// Exactly one line of output, starting "trainer: error:", containing `needle`, exit code 1.
void expect_one_line_error(const testing::CommandResult& r, const std::string& needle) {
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_EQ(r.output.rfind("trainer: error: ", 0), 0u) << r.output;
  EXPECT_EQ(std::count(r.output.begin(), r.output.end(), '\n'), 1) << r.output;
  EXPECT_NE(r.output.find(needle), std::string::npos)
      << "expected '" << needle << "' in: " << r.output;
}

std::string train_command(const std::string& config, const std::string& extra = "") {
  return trainer_binary() + " --config " + config + " " + extra + " 2>&1 >/dev/null";
}

TEST(TrainerCliTest, UnknownKeyNamesTheKeyPath) {
  const std::string dir = scratch_dir("cli_unknown_key");
  const std::string config = write_config(dir, "train_extra: 1\n");
  expect_one_line_error(run_command(train_command(config, "--set train.micro_batchs=2")),
                        "train.micro_batchs");
}

TEST(TrainerCliTest, WrongTypeNamesTheKeyPath) {
  const std::string dir = scratch_dir("cli_wrong_type");
  const std::string config = write_config(dir, "");
  expect_one_line_error(run_command(train_command(config, "--set train.steps=many")),
                        "train.steps");
}

TEST(TrainerCliTest, NonDividingBatchNamesTheKeys) {
  const std::string dir = scratch_dir("cli_batch");
  const std::string config = write_config(dir, "");
  expect_one_line_error(run_command(train_command(config, "--set train.global_batch=5")),
                        "train.global_batch");
}

TEST(TrainerCliTest, TruncatedDatasetNamesTheFile) {
  const std::string dir = scratch_dir("cli_truncated");
  write_corpus(dir);
  const std::string config = write_config(dir, "");
  std::filesystem::resize_file(dir + "/train.bin", 1024 + 1000);  // header + 500 tokens of 18000
  expect_one_line_error(run_command(train_command(config)), dir + "/train.bin");
}

TEST(TrainerCliTest, CorruptedCheckpointNamesTheTensor) {
  const std::string dir = scratch_dir("cli_corrupt");
  write_corpus(dir);
  const std::string config = write_config(dir, "");
  const auto trained = run_command(train_command(config));
  ASSERT_EQ(trained.exit_code, 0) << trained.output;
  const auto latest = checkpoint::find_latest(dir + "/run/checkpoints");
  ASSERT_TRUE(latest.has_value());
  const std::string file = *latest + "/rank_00000.h5";
  const std::string tensor = "model/model.layers.0.mlp.up_proj.weight";
  const uint64_t offset = checkpoint::detail::tensor_file_offset(file, tensor);
  {
    std::fstream f(file, std::ios::in | std::ios::out | std::ios::binary);
    f.seekg(static_cast<std::streamoff>(offset + 10));
    char byte = 0;
    f.read(&byte, 1);
    byte = static_cast<char>(byte ^ 0x40);
    f.seekp(static_cast<std::streamoff>(offset + 10));
    f.write(&byte, 1);
  }
  expect_one_line_error(run_command(train_command(config, "--resume --set train.steps=4")),
                        "model.layers.0.mlp.up_proj.weight");
}

TEST(TrainerCliTest, DryRunOf7BPrintsThePlanWithoutAllocatingIt) {
  const std::string dir = scratch_dir("cli_dry_run_7b");
  const std::string config = std::string(MEMENTO_SOURCE_DIR) + "/configs/llama7b.yaml";
  const auto r = run_command(trainer_binary() + " --config " + config +
                             " --dry-run --set run.out_dir=" + dir + " 2>&1");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(r.output.rfind("memory plan (per rank", 0), 0u)
      << "the table comes first: " << r.output;
  EXPECT_NE(r.output.find("6.74B parameters"), std::string::npos)
      << "Llama-2-7B has 6,738,415,616 parameters: " << r.output;
  for (const char* row :
       {"parameters", "gradients", "optimizer states", "activations saved for backward", "total"})
    EXPECT_NE(r.output.find(row), std::string::npos) << row;
  // The hundreds of activation rows go to a file, not to the screen.
  EXPECT_EQ(r.output.find("model.layers.31.mlp"), std::string::npos) << r.output;
  const std::string list = testing::read_file(dir + "/activations.txt");
  EXPECT_NE(list.find("model.layers.31.mlp"), std::string::npos) << "activation list";
  EXPECT_NE(r.output.find(dir + "/activations.txt"), std::string::npos) << r.output;
  // The child's peak resident memory stays far below the 25 GiB its fp32 parameters would take.
  rusage usage{};
  getrusage(RUSAGE_CHILDREN, &usage);
  EXPECT_LT(usage.ru_maxrss, 1L << 20) << "max RSS " << usage.ru_maxrss << " KiB";
}

// The bytes of one row of the dry run's memory table ("  optimizer states   50.21 GiB").
double table_gib(const std::string& output, const std::string& row) {
  std::smatch m;
  const std::regex pattern("  " + row + " +([0-9.]+) GiB");
  EXPECT_TRUE(std::regex_search(output, m, pattern)) << row << " in " << output;
  return m.size() > 1 ? std::stod(m[1]) : 0.0;
}

TEST(TrainerCliTest, DryRunShardsOptimizerStatesOverDataParallelRanksUnderZero1) {
  const std::string dir = scratch_dir("cli_dry_run_zero1");
  const std::string config = std::string(MEMENTO_SOURCE_DIR) + "/configs/llama7b.yaml";
  const std::string base =
      trainer_binary() + " --config " + config + " --dry-run --set run.out_dir=" + dir;
  const auto one = run_command(base + " 2>&1");
  const auto sharded = run_command(base + " --set parallel.dp=8 --set parallel.zero1=true 2>&1");
  ASSERT_EQ(one.exit_code, 0) << one.output;
  ASSERT_EQ(sharded.exit_code, 0) << sharded.output;
  const double states = table_gib(one.output, "optimizer states");
  EXPECT_NEAR(table_gib(sharded.output, "optimizer states"), states / 8, 0.01) << sharded.output;
  EXPECT_NEAR(table_gib(sharded.output, "parameters"), table_gib(one.output, "parameters"), 1e-9);
  EXPECT_NE(sharded.output.find("8 data-parallel ranks"), std::string::npos) << sharded.output;
  EXPECT_NE(sharded.output.find("ZeRO-1"), std::string::npos) << sharded.output;
}

TEST(TrainerCliTest, DryRunHeaderNamesDeviceAndMixedPrecision) {
  const std::string dir = scratch_dir("cli_dry_run_bf16");
  const std::string config = std::string(MEMENTO_SOURCE_DIR) + "/configs/llama-134m.yaml";
  const auto r =
      run_command(trainer_binary() + " --config " + config + " --dry-run --set run.out_dir=" + dir +
                  " --set model.device=cuda --set model.dtype=bf16 2>&1");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("bf16 mixed precision on cuda"), std::string::npos) << r.output;
}

TEST(TrainerCliTest, ASetThatBreaksACrossKeyCheckIsBlamedFirst) {
  const std::string dir = scratch_dir("cli_set_blame");
  const std::string config = write_config(dir, "");  // warmup_steps: 1, steps: 2
  const auto warmup = run_command(train_command(config, "--set optim.warmup_steps=3"));
  expect_one_line_error(warmup, "optim.warmup_steps = 3 exceeds train.steps = 2");
  EXPECT_EQ(warmup.output.rfind("trainer: error: " + config + " (--set optim.warmup_steps=3): ", 0),
            0u)
      << warmup.output;

  // The user's case: the file's warm-up is fine until --set shortens the run.
  std::string text = testing::read_file(config);
  text.replace(text.find("warmup_steps: 1"), 15, "warmup_steps: 30");
  const std::string long_warmup = dir + "/long_warmup.yaml";
  std::ofstream(long_warmup) << text;
  const auto steps =
      run_command(train_command(long_warmup, "--set train.steps=40 --set train.steps=1"));
  expect_one_line_error(steps, "optim.warmup_steps = 30 exceeds train.steps = 1");
  EXPECT_EQ(steps.output.rfind("trainer: error: " + long_warmup + " (--set train.steps=1): ", 0),
            0u)
      << "leads with the --set: " << steps.output;
  EXPECT_NE(steps.output.find("optim.warmup_steps from " + long_warmup + ":5"), std::string::npos)
      << "names where the other key came from: " << steps.output;
}

TEST(TrainerCliTest, ABudgetBelowTheEstimateFailsAtStartNamingTheKey) {
  const std::string dir = scratch_dir("cli_budget");
  write_corpus(dir);
  const std::string config = write_config(dir, "");
  const auto r = run_command(train_command(config, "--set memory.budget_bytes=300000"));
  expect_one_line_error(r, "memory.budget_bytes = 300000");
  EXPECT_NE(r.output.find("estimated peak"), std::string::npos) << r.output;
  EXPECT_FALSE(std::filesystem::exists(dir + "/run/metrics.jsonl")) << "failed before training";
}

TEST(TrainerCliTest, ATokenizerLargerThanTheModelVocabularyIsRefused) {
  const std::string dir = scratch_dir("cli_tokenizer_vocab");
  write_corpus(dir);
  // 257 + 50 merges = 307 token ids, for a model of 256.
  std::ofstream tok(dir + "/big.bpe");
  tok << "memento-bpe 1 merges 50\n";
  for (int k = 0; k < 50; ++k) tok << 97 << " " << (k == 0 ? 98 : 256 + k) << "\n";
  tok.close();
  const std::string config = write_config(dir, "");
  expect_one_line_error(
      run_command(train_command(config, "--set data.tokenizer=" + dir + "/big.bpe")),
      dir + "/big.bpe: the tokenizer has 307 token ids but model.vocab_size is 256");
}

TEST(TrainerCliTest, VersionNamesTheCommitItWasBuiltFrom) {
  const auto r = run_command(trainer_binary() + " --version 2>&1");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(std::regex_match(r.output, std::regex("memento [0-9]+\\.[0-9]+\\.[0-9]+ \\(commit "
                                                    "([0-9a-f]{12}(-dirty)?|unknown)\\)\n")))
      << r.output;
  const auto head =
      run_command("git -C " MEMENTO_SOURCE_DIR " rev-parse --short=12 HEAD 2>/dev/null");
  if (head.exit_code == 0 && head.output.size() > 1) {
    EXPECT_NE(r.output.find(head.output.substr(0, 12)), std::string::npos) << r.output;
  }
}

TEST(TrainerCliTest, OptionsTakeTheirValueAfterAnEqualsSign) {
  const std::string dir = scratch_dir("cli_equals");
  write_corpus(dir);
  const std::string config = write_config(dir, "");
  const auto r = run_command(trainer_binary() + " --config=" + config +
                             " --set=train.steps=1 --set=optim.warmup_steps=0 2>&1");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("training steps 1..1 of 1"), std::string::npos) << r.output;
}

TEST(TrainerCliTest, SampleHelpDescribesSample) {
  const auto r = run_command(trainer_binary() + " sample --help 2>&1");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(r.output.rfind("usage: trainer sample", 0), 0u) << r.output;
  for (const char* option :
       {"--checkpoint", "--prompt", "--tokens", "--temperature", "--top-k", "--seed"})
    EXPECT_NE(r.output.find(option), std::string::npos) << option;
  EXPECT_EQ(r.output.find("--dry-run"), std::string::npos) << "the training usage: " << r.output;
}

}  // namespace
}  // namespace memento
