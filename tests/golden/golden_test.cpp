// The trainer reproduces, bit for bit, the losses and gradient norms recorded before the seams
// refactor (tests/golden/README.md), on one process and on two data-parallel ranks with and
// without ZeRO-1; and a checkpoint written before the refactor resumes into the same run.
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "launch/e2e_testing.h"

namespace memento {
namespace {

namespace fs = std::filesystem;

const std::string kGolden = std::string(MEMENTO_SOURCE_DIR) + "/tests/golden";

struct Step {
  long long step = 0;
  double loss = 0, grad_norm = 0;
  std::string line;
};

std::vector<Step> read_steps(const std::string& path) {
  std::ifstream in(path);
  std::vector<Step> steps;
  for (std::string line; std::getline(in, line);) {
    Step s;
    s.line = line;
    std::istringstream fields(line);
    std::string loss, norm;
    fields >> s.step >> loss >> norm;
    s.loss = std::strtod(loss.c_str(), nullptr);
    s.grad_norm = std::strtod(norm.c_str(), nullptr);
    steps.push_back(s);
  }
  return steps;
}

// Runs golden_runner on `config` (under mpirun when np > 1); returns its steps.
std::vector<Step> run_golden(const std::string& name, const std::string& config, int np,
                             const std::vector<std::string>& sets, bool resume = false,
                             const std::string& out = "") {
  const std::string dir = out.empty() ? testing::scratch_dir("golden_" + name) : out;
  std::string command;
  if (np > 1) {
    for (const auto& a : testing::mpirun(np)) command += a + " ";
  }
  command += std::string(MEMENTO_GOLDEN_RUNNER) + " " + kGolden + "/" + config + " " + dir + " " +
             dir + "/steps.txt --set data.train=" + kGolden + "/corpus.bin";
  for (const auto& s : sets) command += " --set " + s;
  if (resume) command += " --resume";
  const auto r = testing::run_command(command + " > " + dir + "/log.txt 2>&1");
  EXPECT_EQ(r.exit_code, 0) << command << "\n" << testing::read_file(dir + "/log.txt");
  return read_steps(dir + "/steps.txt");
}

// Every step of `got` equals the golden step with the same number, to the bit.
void expect_bitwise(const std::vector<Step>& got, const std::vector<Step>& golden,
                    size_t first_golden = 0) {
  ASSERT_EQ(got.size(), golden.size() - first_golden);
  for (size_t i = 0; i < got.size(); ++i) {
    const Step& want = golden[first_golden + i];
    EXPECT_EQ(got[i].line, want.line)
        << "step " << want.step << ": loss " << got[i].loss << " vs golden " << want.loss
        << " (diff " << got[i].loss - want.loss << "), grad norm " << got[i].grad_norm
        << " vs golden " << want.grad_norm;
  }
}

struct GoldenCase {
  std::string name;    // golden file tests/golden/<name>.txt
  std::string config;  // in tests/golden
  int np;
  std::vector<std::string> sets;
};

void PrintTo(const GoldenCase& c, std::ostream* os) { *os << c.name; }

class Golden : public ::testing::TestWithParam<GoldenCase> {};

TEST_P(Golden, ReproducesThePreRefactorRunBitForBit) {
  const GoldenCase& c = GetParam();
  const std::vector<Step> golden = read_steps(kGolden + "/" + c.name + ".txt");
  ASSERT_EQ(golden.size(), 20u);
  expect_bitwise(run_golden(c.name, c.config, c.np, c.sets), golden);
}

INSTANTIATE_TEST_SUITE_P(
    Runs, Golden,
    ::testing::Values(GoldenCase{"tiny", "tiny.yaml", 1, {}},
                      GoldenCase{"tiny-linear", "tiny-linear.yaml", 1, {}},
                      GoldenCase{"tiny-hybrid", "tiny-hybrid.yaml", 1, {}},
                      GoldenCase{"small-tied", "small-tied.yaml", 1, {}},
                      GoldenCase{"tiny-hybrid-dp2", "tiny-hybrid.yaml", 2, {"parallel.dp=2"}},
                      GoldenCase{"tiny-hybrid-zero1",
                                 "tiny-hybrid.yaml",
                                 2,
                                 {"parallel.dp=2", "parallel.zero1=true"}}),
    [](const ::testing::TestParamInfo<GoldenCase>& p) {
      std::string n = p.param.name;
      for (char& ch : n)
        if (ch == '-') ch = '_';
      return n;
    });

TEST(GoldenCheckpoint, APreRefactorCheckpointResumesIntoTheSameRun) {
  const std::string dir = testing::scratch_dir("golden_resume");
  const fs::path checkpoints = fs::path(dir) / "checkpoints";
  fs::create_directories(checkpoints);
  fs::copy(std::string(MEMENTO_SOURCE_DIR) + "/tests/data/pre_seams_checkpoint/step_000000010",
           checkpoints / "step_000000010", fs::copy_options::recursive);
  std::ofstream(checkpoints / "latest") << "step_000000010\n";
  const std::vector<Step> golden = read_steps(kGolden + "/small-tied.txt");
  ASSERT_EQ(golden.size(), 20u);
  const std::vector<Step> resumed = run_golden("resume", "small-tied.yaml", 1, {}, true, dir);
  ASSERT_FALSE(resumed.empty()) << testing::read_file(dir + "/log.txt");
  EXPECT_EQ(resumed.front().step, 11);
  expect_bitwise(resumed, golden, 10);
}

}  // namespace
}  // namespace memento
