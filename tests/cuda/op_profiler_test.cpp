// The GPU op profiler: ops run through core/ops are timed only while profiling is on, and the
// report names each op with its call count.
#include "core/cuda/op_profiler.h"

#include <gtest/gtest.h>

#include <sstream>
#include <string>

#include "core/ops/elementwise.h"
#include "core/ops/matmul.h"
#include "tests/cuda/cuda_testing.h"

namespace memento {
namespace {

using testing::CudaTest;
using testing::random_gpu;

class CudaOpProfiler : public CudaTest {};

// The calls column of the report's row for `op` (-1 when there is no such row).
int64_t calls_of(const std::string& report, const std::string& op) {
  std::istringstream lines(report);
  std::string line;
  while (std::getline(lines, line)) {
    std::istringstream fields(line);
    std::string name;
    int64_t calls = -1;
    if (fields >> name >> calls && name == op) return calls;
  }
  return -1;
}

TEST_F(CudaOpProfiler, CountsTheOpsRunWhileOnAndNothingElse) {
  const Tensor a = random_gpu({64, 128}, DType::kBF16, 1);
  const Tensor b = random_gpu({32, 128}, DType::kBF16, 2);
  const Tensor c = Tensor::empty({64, 32}, DType::kF32, testing::kGpu);
  ops::matmul(a, false, b, true, c);  // before: not recorded
  cuda::set_op_profiling(true);
  ops::matmul(a, false, b, true, c);
  ops::matmul(a, false, b, true, c, 1.0, 1.0);
  ops::scale_(c, 0.5);
  cuda::set_op_profiling(false);
  ops::scale_(c, 0.5);  // after: not recorded
  const std::string report = cuda::op_profile_report(1.0);
  EXPECT_NE(report.find("matmul"), std::string::npos) << report;
  EXPECT_NE(report.find("scale_"), std::string::npos) << report;
  EXPECT_EQ(calls_of(report, "matmul"), 2) << report;
  EXPECT_EQ(calls_of(report, "scale_"), 1) << report;
  // The report forgets what it printed.
  EXPECT_EQ(cuda::op_profile_report(1.0).find("matmul"), std::string::npos);
}

}  // namespace
}  // namespace memento
