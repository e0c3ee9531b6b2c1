// A failure on one rank ends every rank of the job, non-zero and promptly (ARCHITECTURE contract
// 9: fatal, never a hang). Runs tests/parallel/mpi_abort_helper.cpp under mpirun on 2 ranks.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <array>
#include <chrono>
#include <cstdio>
#include <initializer_list>
#include <string>

namespace {

constexpr int kTimeoutSeconds = 30;
constexpr int kTimedOut = 124;  // timeout(1)'s exit status

struct JobResult {
  int exit_code = -1;
  double seconds = 0;
  std::string output;
};

JobResult run_job(const std::string& mode) {
  // Open MPI never frees some of its allocations: under AddressSanitizer, leak reports would turn
  // the passing job's exit status non-zero.
  const std::string command =
      "ASAN_OPTIONS=detect_leaks=0 timeout " + std::to_string(kTimeoutSeconds) +
      " " MEMENTO_MPIEXEC " --oversubscribe --allow-run-as-root -np 2 " MEMENTO_MPI_ABORT_HELPER
      " " +
      mode + " 2>&1";
  JobResult result;
  const auto start = std::chrono::steady_clock::now();
  FILE* pipe = popen(command.c_str(), "r");
  if (pipe == nullptr) return result;
  std::array<char, 4096> chunk;
  size_t n = 0;
  while ((n = fread(chunk.data(), 1, chunk.size(), pipe)) > 0)
    result.output.append(chunk.data(), n);
  const int status = pclose(pipe);
  result.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return result;
}

void expect_job_fails(const std::string& mode, std::initializer_list<std::string> messages) {
  const JobResult job = run_job(mode);
  EXPECT_NE(job.exit_code, 0) << job.output;
  EXPECT_NE(job.exit_code, kTimedOut) << "the job hung: " << job.output;
  EXPECT_LT(job.seconds, kTimeoutSeconds);
  for (const std::string& message : messages) {
    EXPECT_NE(job.output.find(message), std::string::npos) << message << " in\n" << job.output;
  }
}

TEST(MpiAbort, JobWithoutFailureExitsZero) {
  const JobResult job = run_job("ok");
  EXPECT_EQ(job.exit_code, 0) << job.output;
}

TEST(MpiAbort, FailingMpiCallOnOneRankEndsEveryRank) {
  // MPI_CHECK's line: rank, world size and the call that failed.
  expect_job_fails("mpi_check",
                   {"[rank 1/2 on ", "mpi_abort_helper.cpp:",
                    "MPI_Send(&value, 1, MPI_INT, no_such_rank, 0, MPI_COMM_WORLD) failed"});
}

TEST(MpiAbort, ExceptionOnOneRankEndsEveryRank) {
  expect_job_fails("throw", {"error: rank 1 read a corrupt shard"});
}

TEST(MpiAbort, CheckFailureOnOneRankEndsEveryRank) {
  expect_job_fails("check", {"[rank 1/2 on ", "rank 1 broke an invariant"});
}

}  // namespace
