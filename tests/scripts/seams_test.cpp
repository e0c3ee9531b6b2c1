// The seams hold (issue 10, Must-show 7): GEMMs go through the GEMM layer, no source file grows
// past 1,000 lines, the trainer's init and step stay short, and scripts/test.sh checks the
// formatting. Each checker takes a root directory; a fake tree with a violation shows it can fail.
#include <gtest/gtest.h>

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <optional>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "core/error.h"
#include "launch/e2e_testing.h"

namespace memento {
namespace {

namespace fs = std::filesystem;

// The folders that hold Memento's C++ and CUDA sources.
const std::vector<std::string> kSourceFolders = {"core",       "memory", "parallel", "optim",
                                                 "checkpoint", "launch", "bench",    "tests"};
constexpr int kMaxFileLines = 1000;
constexpr int kMaxFunctionLines = 60;  // "under 60": a function must be shorter

struct Finding {
  std::string file;  // relative to the root
  int line = 0;
  std::string text;
};

std::string describe(const std::vector<Finding>& findings) {
  std::ostringstream out;
  for (const Finding& f : findings) out << "\n  " << f.file << ":" << f.line << ": " << f.text;
  return out.str();
}

bool is_source(const fs::path& p) {
  const std::string ext = p.extension().string();
  return ext == ".h" || ext == ".cpp" || ext == ".cu" || ext == ".cuh";
}

// A build tree (CMakeCache.txt at its top) holds generated and fetched sources: not ours.
bool is_build_tree(const fs::path& dir) { return fs::exists(dir / "CMakeCache.txt"); }

// Every .h .cpp .cu .cuh under root's source folders, relative to root, sorted.
std::vector<std::string> source_files(const fs::path& root) {
  std::vector<std::string> files;
  for (const std::string& folder : kSourceFolders) {
    if (!fs::is_directory(root / folder)) continue;
    for (const auto& e : fs::recursive_directory_iterator(root / folder))
      if (e.is_regular_file() && is_source(e.path()))
        files.push_back(e.path().lexically_relative(root).generic_string());
  }
  std::sort(files.begin(), files.end());
  return files;
}

// Top-level folders of root, other than the source folders, hidden ones and build trees, that
// hold C++/CUDA sources: the checks below would not see them.
std::vector<std::string> unknown_source_folders(const fs::path& root) {
  std::vector<std::string> unknown;
  for (const auto& top : fs::directory_iterator(root)) {
    const std::string name = top.path().filename().string();
    if (!top.is_directory() || name.starts_with(".") || is_build_tree(top.path())) continue;
    if (std::find(kSourceFolders.begin(), kSourceFolders.end(), name) != kSourceFolders.end())
      continue;
    for (const auto& e : fs::recursive_directory_iterator(top.path()))
      if (e.is_regular_file() && is_source(e.path())) {
        unknown.push_back(e.path().lexically_relative(root).generic_string());
        break;
      }
  }
  return unknown;
}

std::vector<std::string> read_lines(const fs::path& file) {
  std::vector<std::string> lines;
  std::ifstream in(file);
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

// The file's lines with comments and the contents of string and character literals blanked, so
// that a comment or a message that names a GEMM is not a call. Raw strings are not understood.
std::vector<std::string> code_lines(const fs::path& file) {
  std::vector<std::string> lines = read_lines(file);
  bool in_block_comment = false;
  for (std::string& line : lines) {
    char quote = 0;
    for (size_t i = 0; i < line.size(); ++i) {
      char& c = line[i];
      if (in_block_comment) {
        if (c == '*' && i + 1 < line.size() && line[i + 1] == '/') {
          in_block_comment = false;
          line[i + 1] = ' ';
        }
        c = ' ';
      } else if (quote != 0) {
        if (c == '\\' && i + 1 < line.size()) {
          c = line[i + 1] = ' ';
          ++i;
        } else if (c == quote) {
          quote = 0;
        } else {
          c = ' ';
        }
      } else if (c == '/' && i + 1 < line.size() && line[i + 1] == '/') {
        line.resize(i);
      } else if (c == '/' && i + 1 < line.size() && line[i + 1] == '*') {
        in_block_comment = true;
        c = ' ';
      } else if (c == '"' || (c == '\'' &&
                              (i == 0 || !std::isalnum(static_cast<unsigned char>(line[i - 1]))))) {
        quote = c;  // a ' after a digit or letter is a digit separator (1'000) or a suffix
      }
    }
  }
  return lines;
}

bool under(const std::string& file, const std::string& prefix) { return file.starts_with(prefix); }

// Calls of matmul (any namespace: ops::matmul, cuda::matmul, matmul) and uses of a BLAS
// (cblas_*, cublas*) in root's sources outside the files allowed to make them:
// - matmul: core/layers/linear.cpp, the GEMM layer that every model GEMM goes through;
//   core/ops/matmul.{h,cpp}, the op itself (its declaration, its dispatch and the peak-FLOP/s
//   probe that times it); core/cuda/, the op's CUDA backend; bench/, benchmarks of GEMMs;
//   tests/, which test the op and the backend directly.
// - cblas_/cublas: core/ops/matmul.cpp (OpenBLAS on the CPU) and core/cuda/ (cuBLASLt).
std::vector<Finding> gemm_calls_outside_the_gemm_layer(const fs::path& root) {
  static const std::regex matmul_call("(^|[^A-Za-z0-9_])matmul\\s*\\(");
  static const std::regex blas_use("(^|[^A-Za-z0-9_])(cblas_|cublas)");
  std::vector<Finding> findings;
  for (const std::string& file : source_files(root)) {
    const bool may_matmul = file == "core/layers/linear.cpp" || file == "core/ops/matmul.h" ||
                            file == "core/ops/matmul.cpp" || under(file, "core/cuda/") ||
                            under(file, "bench/") || under(file, "tests/");
    const bool may_blas = file == "core/ops/matmul.cpp" || under(file, "core/cuda/");
    if (may_matmul && may_blas) continue;
    const std::vector<std::string> code = code_lines(root / file);
    const std::vector<std::string> text = read_lines(root / file);
    for (size_t i = 0; i < code.size(); ++i) {
      if (!may_matmul && std::regex_search(code[i], matmul_call))
        findings.push_back(
            {file, static_cast<int>(i + 1), detail::concat("a matmul call: ", text[i])});
      if (!may_blas && std::regex_search(code[i], blas_use))
        findings.push_back(
            {file, static_cast<int>(i + 1), detail::concat("a BLAS call: ", text[i])});
    }
  }
  return findings;
}

// Source files under root longer than max_lines; each finding's line is the file's length.
std::vector<Finding> files_longer_than(const fs::path& root, int max_lines) {
  std::vector<Finding> findings;
  for (const std::string& file : source_files(root)) {
    const int lines = static_cast<int>(read_lines(root / file).size());
    if (lines > max_lines)
      findings.push_back({file, lines, detail::concat(lines, " lines, over ", max_lines)});
  }
  return findings;
}

struct FunctionSpan {
  int first_line = 0;  // the line that starts with the signature
  int last_line = 0;   // the line that starts with the closing brace
  int lines() const { return last_line - first_line + 1; }
};

// The span of the definition whose line starts with `signature` (at column 0) to the next line
// that starts with '}' (a definition's closing brace in a formatted file); nullopt if absent.
std::optional<FunctionSpan> function_span(const fs::path& file, const std::string& signature) {
  const std::vector<std::string> lines = read_lines(file);
  for (size_t i = 0; i < lines.size(); ++i) {
    if (!lines[i].starts_with(signature)) continue;
    for (size_t j = i; j < lines.size(); ++j)
      if (lines[j].starts_with("}") || (j == i && lines[j].ends_with("}")))
        return FunctionSpan{static_cast<int>(i + 1), static_cast<int>(j + 1)};
    return std::nullopt;
  }
  return std::nullopt;
}

void write_file(const fs::path& path, const std::string& text) {
  fs::create_directories(path.parent_path());
  std::ofstream(path) << text;
}

std::string lines_of(int n, const std::string& line) {
  std::string text;
  for (int i = 0; i < n; ++i) text += line + "\n";
  return text;
}

// --- The checkers find what they look for (fake trees) ---

TEST(SeamsTest, TheGemmCheckFindsACallOutsideTheGemmLayer) {
  const fs::path root = testing::scratch_dir("seams_gemm");
  write_file(root / "core/layers/linear.cpp", "  ops::matmul(x, false, w, true, y);\n");
  write_file(root / "core/ops/matmul.cpp", "  cblas_sgemm(a);\n  ops::matmul(a, b);\n");
  write_file(root / "core/cuda/gemm.cu", "  cublasLtMatmul(h);\n  matmul(a, b);\n");
  write_file(root / "bench/gemm_bench.cpp", "  ops::matmul(a, false, b, true, c);\n");
  write_file(root / "tests/core/ops_test.cpp", "  ops::matmul(a, false, b, true, c);\n");
  write_file(root / "core/layers/attention.cpp",
             "// q k^T through matmul(q, k) would skip the layer\n"        // a comment
             "  check(x, \"matmul(\");  /* ops::matmul(a) */ f(1'000);\n"  // a string, a comment
             "  batched_matmul(q, k);\n"                                   // another function
             "  ops::matmul(q, false, k, true, scores);\n"                 // line 4: a call
             "  /* a comment over\n  two lines: ops::matmul( */ int x;\n");
  write_file(root / "core/model/llama.cpp", "int a;\n  cblas_sgemm(CblasRowMajor);\n");
  write_file(root / "tests/core/blas_test.cpp", "#include <cublasLt.h>\n");
  write_file(root / "launch/trainer.cpp", "  cuda::matmul (a, b);\n");
  write_file(root / "docs/notes.cpp", "matmul(a, b);\n");  // not a source folder

  const std::vector<Finding> found = gemm_calls_outside_the_gemm_layer(root);
  std::vector<std::string> where;
  for (const Finding& f : found) where.push_back(detail::concat(f.file, ":", f.line));
  EXPECT_EQ(where,
            (std::vector<std::string>{"core/layers/attention.cpp:4", "core/model/llama.cpp:2",
                                      "launch/trainer.cpp:1", "tests/core/blas_test.cpp:1"}))
      << describe(found);
  EXPECT_EQ(unknown_source_folders(root), std::vector<std::string>{"docs/notes.cpp"});
}

TEST(SeamsTest, TheSizeCheckFindsAFileOverTheLimit) {
  const fs::path root = testing::scratch_dir("seams_size");
  write_file(root / "core/at_limit.cpp", lines_of(kMaxFileLines, "int x;"));
  write_file(root / "memory/over.cuh", lines_of(kMaxFileLines + 1, "int x;"));
  write_file(root / "tests/data/corpus.txt", lines_of(3 * kMaxFileLines, "text"));
  const std::vector<Finding> found = files_longer_than(root, kMaxFileLines);
  ASSERT_EQ(found.size(), 1u) << describe(found);
  EXPECT_EQ(found[0].file, "memory/over.cuh");
  EXPECT_EQ(found[0].line, kMaxFileLines + 1);
}

TEST(SeamsTest, TheFunctionLengthCountsFromTheSignatureToTheClosingBrace) {
  const fs::path root = testing::scratch_dir("seams_function");
  std::string text = "#include <x>\n";      // 1
  text += "void Trainer::init(int a,\n";    // 2
  text += "                   int b) {\n";  // 3
  text += "  if (a) {\n";                   // 4
  text += lines_of(70, "    ++b;");         // 5-74
  text += "  }\n}\n\n";                     // 75-77: the closing brace at column 0 is line 76
  text += "int Trainer::step() { return 1; }\n";
  write_file(root / "trainer.cpp", text);
  const auto init = function_span(root / "trainer.cpp", "void Trainer::init(");
  ASSERT_TRUE(init.has_value());
  EXPECT_EQ(init->first_line, 2);
  EXPECT_EQ(init->lines(), 75);
  const auto step = function_span(root / "trainer.cpp", "int Trainer::step(");
  ASSERT_TRUE(step.has_value());
  EXPECT_EQ(step->lines(), 1);
  EXPECT_FALSE(function_span(root / "trainer.cpp", "StepMetrics Trainer::train_step(").has_value());
}

// scripts/check_format.sh in a small git repository of its own, as a clone would have it.
class CheckFormatScript : public ::testing::Test {
 protected:
  void SetUp() override {
    if (testing::run_command("command -v git").exit_code != 0) GTEST_SKIP() << "no git";
    // One directory per test: ctest runs the tests of this fixture side by side.
    root_ = testing::scratch_dir(detail::concat(
        "seams_check_format_", ::testing::UnitTest::GetInstance()->current_test_info()->name()));
    fs::create_directories(root_ / "scripts");
    fs::copy_file(fs::path(MEMENTO_SOURCE_DIR) / "scripts/check_format.sh",
                  root_ / "scripts/check_format.sh");
    fs::copy_file(fs::path(MEMENTO_SOURCE_DIR) / ".clang-format", root_ / ".clang-format");
    write_file(root_ / "good.cpp", "int f() { return 1; }\n");
    write_file(root_ / "old_bad.h", "int  h( );\n");  // on main before the branch
    git("init -q -b main");
    git("add -A");
    git("commit -q -m main");
  }
  void git(const std::string& args) {
    const auto r = testing::run_command(
        "git -C '" + root_.string() + "' -c user.name=seams -c user.email=seams@example.invalid " +
        args + " 2>&1");
    ASSERT_EQ(r.exit_code, 0) << args << ": " << r.output;
  }
  testing::CommandResult check(const std::string& args = "", const fs::path& root = {}) {
    return testing::run_command("bash '" + (root.empty() ? root_ : root).string() +
                                "/scripts/check_format.sh' " + args + " 2>&1");
  }
  fs::path root_;
};

TEST_F(CheckFormatScript, FailsOnAChangedFileNamingItAndTheFix) {
  EXPECT_EQ(check().exit_code, 0) << check().output;  // on main: nothing changed
  git("checkout -q -b feature");
  write_file(root_ / "core/bad.cu", "int  g( ) {return 2;}\n");  // untracked
  auto r = check();
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("core/bad.cu:1:"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("clang-format"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find(" -i core/bad.cu"), std::string::npos) << r.output;
  EXPECT_EQ(r.output.find("old_bad.h"), std::string::npos) << "not changed on the branch\n"
                                                           << r.output;

  git("add -A");
  git("commit -q -m bad");  // committed on the branch: still a change against main
  r = check();
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("core/bad.cu"), std::string::npos) << r.output;

  r = check("--all");
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("old_bad.h"), std::string::npos) << r.output;

  // origin/main, where a clone has it, is the base in place of main.
  git("update-ref refs/remotes/origin/main HEAD");
  EXPECT_EQ(check().exit_code, 0) << check().output;
  git("update-ref -d refs/remotes/origin/main");

  // The command it prints fixes the file.
  const auto fixed = testing::run_command("cd '" + root_.string() +
                                          "' && clang-format -i core/bad.cu && bash "
                                          "scripts/check_format.sh 2>&1");
  EXPECT_EQ(fixed.exit_code, 0) << fixed.output;
}

TEST_F(CheckFormatScript, SkipsOutsideAGitCheckout) {
  const fs::path tarball = testing::scratch_dir("seams_check_format_tarball");
  fs::create_directories(tarball / "scripts");
  fs::copy_file(root_ / "scripts/check_format.sh", tarball / "scripts/check_format.sh");
  write_file(tarball / "bad.cpp", "int  g( ) {return 2;}\n");
  const auto r = check("", tarball);  // inside the build tree of a checkout, but not its top
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("not a git checkout"), std::string::npos) << r.output;
  EXPECT_EQ(check("bad.cpp", tarball).exit_code, 1);  // given files are checked anywhere
}

// --- The repository passes them ---

TEST(SeamsTest, EveryGemmGoesThroughTheGemmLayer) {
  const std::vector<Finding> found = gemm_calls_outside_the_gemm_layer(MEMENTO_SOURCE_DIR);
  EXPECT_TRUE(found.empty()) << "GEMMs outside core/layers/linear.cpp (call them through Linear):"
                             << describe(found);
  EXPECT_EQ(unknown_source_folders(MEMENTO_SOURCE_DIR), std::vector<std::string>{})
      << "sources in a folder these checks do not read: add it to kSourceFolders";
}

TEST(SeamsTest, NoSourceFileIsOverAThousandLines) {
  const std::vector<Finding> found = files_longer_than(MEMENTO_SOURCE_DIR, kMaxFileLines);
  EXPECT_TRUE(found.empty()) << "split these files:" << describe(found);
}

TEST(SeamsTest, TheTrainersInitAndStepAreEachUnderSixtyLines) {
  const fs::path trainer = fs::path(MEMENTO_SOURCE_DIR) / "launch/trainer.cpp";
  for (const std::string signature : {"void Trainer::init(", "StepMetrics Trainer::train_step("}) {
    const auto span = function_span(trainer, signature);
    ASSERT_TRUE(span.has_value()) << "no line of launch/trainer.cpp starts with '" << signature
                                  << "': renamed? update this test";
    std::cout << signature << "...) is " << span->lines()
              << " lines (launch/trainer.cpp:" << span->first_line << "-" << span->last_line
              << ")\n";
    EXPECT_LT(span->lines(), kMaxFunctionLines)
        << signature << "...) is " << span->lines()
        << " lines (launch/trainer.cpp:" << span->first_line << "-" << span->last_line
        << "); it must be under " << kMaxFunctionLines;
  }
}

TEST(SeamsTest, TheTestScriptChecksTheFormatting) {
  bool calls_check = false;
  for (const std::string& line : read_lines(fs::path(MEMENTO_SOURCE_DIR) / "scripts/test.sh"))
    if (!line.starts_with("#") && line.find("bash scripts/check_format.sh") != std::string::npos)
      calls_check = true;
  EXPECT_TRUE(calls_check) << "scripts/test.sh no longer runs scripts/check_format.sh";
  const std::string check = testing::read_file(MEMENTO_SOURCE_DIR "/scripts/check_format.sh");
  EXPECT_NE(check.find("--dry-run -Werror"), std::string::npos);
  const auto r =
      testing::run_command("bash " MEMENTO_SOURCE_DIR "/scripts/install_deps.sh test --list");
  EXPECT_NE(("\n" + r.output).find("\nclang-format\n"), std::string::npos) << r.output;
}

}  // namespace
}  // namespace memento
