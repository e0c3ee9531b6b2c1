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

void write_corpus(const std::string& dir) {
  const std::string text = testing::fortunes_text(20000);
  testing::write_byte_tokens(dir + "/train.bin", text.substr(0, 18000));
  testing::write_byte_tokens(dir + "/val.bin", text.substr(18000));
}

// Exactly one line of output, starting "trainer: error:", containing `needle`, exit code 1.
void expect_one_line_error(const testing::CommandResult& r, const std::string& needle) {
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_EQ(r.output.rfind("trainer: error: ", 0), 0u) << r.output;
  EXPECT_EQ(std::count(r.output.begin(), r.output.end(), '\n'), 1) << r.output;
  EXPECT_NE(r.output.find(needle), std::string::npos) << "expected '" << needle << "' in: " << r.output;
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
  expect_one_line_error(run_command(train_command(config, "--set train.steps=many")), "train.steps");
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
  const std::string config = std::string(MEMENTO_SOURCE_DIR) + "/configs/llama7b.yaml";
  const auto r = run_command(trainer_binary() + " --config " + config + " --dry-run 2>&1");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  std::smatch m;
  ASSERT_TRUE(std::regex_search(r.output, m, std::regex("parameters: (\\d+)"))) << r.output;
  const double params = std::stod(m[1]);
  EXPECT_NEAR(params / 1e9, 6.74, 0.05) << "Llama-2-7B has 6,738,415,616 parameters";
  for (const char* row : {"parameters", "gradients", "optimizer states",
                          "activations saved for backward", "total"})
    EXPECT_NE(r.output.find(row), std::string::npos) << row;
  EXPECT_NE(r.output.find("model.layers.31.mlp"), std::string::npos) << "activation list";
  // The child's peak resident memory stays far below the 25 GiB its fp32 parameters would take.
  rusage usage{};
  getrusage(RUSAGE_CHILDREN, &usage);
  EXPECT_LT(usage.ru_maxrss, 1L << 20) << "max RSS " << usage.ru_maxrss << " KiB";
}

}  // namespace
}  // namespace memento
