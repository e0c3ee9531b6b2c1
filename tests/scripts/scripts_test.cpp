// The repository as a new user meets it: the quickstart installs only what training on the CPU
// needs (the test suite's Slurm daemons and GoogleTest belong to scripts/test.sh), and what the
// configs, scripts, benchmarks and docs point a reader to is in the repository.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <regex>
#include <set>
#include <sstream>

#include "launch/e2e_testing.h"

namespace memento {
namespace {

namespace fs = std::filesystem;

std::set<std::string> profile(const std::string& name) {
  const auto r = testing::run_command("bash " MEMENTO_SOURCE_DIR "/scripts/install_deps.sh " +
                                      name + " --list");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  std::set<std::string> packages;
  std::istringstream in(r.output);
  for (std::string p; in >> p;) packages.insert(p);
  return packages;
}

TEST(ScriptsTest, TheQuickstartInstallsOnlyWhatTrainingNeeds) {
  const std::set<std::string> train = profile("train");
  const std::set<std::string> test = profile("test");
  for (const char* p :
       {"slurmctld", "slurmd", "slurm-client", "munge", "libpmix2", "libgtest-dev"}) {
    EXPECT_FALSE(train.contains(p)) << p << " is for the tests, not for training";
    EXPECT_TRUE(test.contains(p)) << p;
  }
  for (const std::string& p : train) EXPECT_TRUE(test.contains(p)) << p;
  for (const char* p : {"libopenblas-openmp-dev", "libhdf5-dev", "libopenmpi-dev", "fortunes"})
    EXPECT_TRUE(train.contains(p)) << p;
  const std::string quickstart = testing::read_file(MEMENTO_SOURCE_DIR "/scripts/quickstart.sh");
  EXPECT_NE(quickstart.find("scripts/install_deps.sh train\n"), std::string::npos) << quickstart;
  EXPECT_EQ(testing::run_command("bash " MEMENTO_SOURCE_DIR "/scripts/install_deps.sh nope 2>&1")
                .exit_code,
            2);
}

// Every file under the source tree's configs/, scripts/, bench/, docs/ and README.md.
std::vector<fs::path> readable_files() {
  std::vector<fs::path> files{fs::path(MEMENTO_SOURCE_DIR) / "README.md"};
  for (const char* dir : {"configs", "scripts", "bench", "docs"}) {
    for (const auto& e : fs::recursive_directory_iterator(fs::path(MEMENTO_SOURCE_DIR) / dir))
      if (e.is_regular_file()) files.push_back(e.path());
  }
  return files;
}

TEST(ScriptsTest, EveryDocumentAReaderIsPointedToIsInTheRepository) {
  // "docs/launch.md", "configs/tiny.yaml", "scripts/test.sh", "research/x.md", ... as written.
  const std::regex reference(
      "(^|[^A-Za-z0-9_./-])((docs|configs|scripts|bench|research)/[A-Za-z0-9_./"
      "-]+\\.(md|yaml|sh|py|sbatch))");
  for (const fs::path& file : readable_files()) {
    const std::string text = testing::read_file(file.string());
    for (auto it = std::sregex_iterator(text.begin(), text.end(), reference);
         it != std::sregex_iterator(); ++it) {
      const std::string target = (*it)[2];
      EXPECT_TRUE(fs::exists(fs::path(MEMENTO_SOURCE_DIR) / target))
          << file.lexically_relative(MEMENTO_SOURCE_DIR) << " refers to " << target
          << ", which is not in the repository";
    }
  }
}

}  // namespace
}  // namespace memento
