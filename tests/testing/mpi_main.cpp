// main() of the MPI test executables (tests/<folder>/*_mpi_test.cpp), run under mpirun: every rank
// runs the same tests in the same order, and a failure on any rank fails the job on every rank.
// Rank 0 prints gtest's usual report; other ranks print only their failures, tagged with the rank.
#include <gtest/gtest.h>
#include <mpi.h>

#include <cstdio>
#include <string>
#include <vector>

#include "parallel/mpi_communicator.h"

namespace {

class FailurePrinter final : public ::testing::EmptyTestEventListener {
 public:
  explicit FailurePrinter(int rank) : rank_(rank) {}

  void OnTestPartResult(const ::testing::TestPartResult& result) override {
    if (!result.failed()) return;
    std::printf("[rank %d] %s:%d: Failure\n%s\n", rank_,
                result.file_name() ? result.file_name() : "?", result.line_number(),
                result.message());
    std::fflush(stdout);
  }
  void OnTestEnd(const ::testing::TestInfo& info) override {
    if (!info.result()->Failed()) return;
    std::printf("[rank %d] [  FAILED  ] %s.%s\n", rank_, info.test_suite_name(), info.name());
    std::fflush(stdout);
  }

 private:
  int rank_;
};

}  // namespace

int main(int argc, char** argv) {
  memento::parallel::MpiSession session(&argc, &argv);
  ::testing::InitGoogleTest(&argc, argv);
  if (session.rank() != 0) {
    ::testing::TestEventListeners& listeners = ::testing::UnitTest::GetInstance()->listeners();
    delete listeners.Release(listeners.default_result_printer());
    listeners.Append(new FailurePrinter(session.rank()));
  }
  const int failed_here = RUN_ALL_TESTS() != 0 ? 1 : 0;

  std::vector<int> failed(static_cast<size_t>(session.size()));
  MPI_CHECK(MPI_Allgather(&failed_here, 1, MPI_INT, failed.data(), 1, MPI_INT, MPI_COMM_WORLD));
  std::string failed_ranks;
  for (size_t r = 0; r < failed.size(); ++r) {
    if (failed[r]) failed_ranks += (failed_ranks.empty() ? "" : ", ") + std::to_string(r);
  }
  if (session.rank() == 0) {
    if (failed_ranks.empty()) {
      std::printf("[mpi] all %d ranks passed\n", session.size());
    } else {
      std::printf("[mpi] FAILED on ranks %s of %d\n", failed_ranks.c_str(), session.size());
    }
    std::fflush(stdout);
  }
  return failed_ranks.empty() ? 0 : 1;
}
