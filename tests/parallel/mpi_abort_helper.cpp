// A two-rank job in which rank 1 fails while rank 0 waits in a barrier; test_parallel_mpi_abort
// runs it under mpirun and expects the whole job to end, non-zero, with rank 1's message.
// Modes: mpi_check (a failing MPI call), throw (an exception out of main), check (MEMENTO_CHECK),
// ok (no failure).
#include <mpi.h>

#include <cstdio>
#include <string>

#include "core/error.h"
#include "parallel/mpi_communicator.h"

namespace {

void run(const memento::parallel::MpiSession& session, const std::string& mode) {
  if (session.rank() == 1) {
    if (mode == "mpi_check") {
      int value = 0;
      const int no_such_rank = session.size() + 7;
      MPI_CHECK(MPI_Send(&value, 1, MPI_INT, no_such_rank, 0, MPI_COMM_WORLD));
    } else if (mode == "throw") {
      throw memento::DataError("rank 1 read a corrupt shard");
    } else if (mode == "check") {
      MEMENTO_CHECK(session.rank() != 1, "rank 1 broke an invariant");
    }
  }
  MPI_CHECK(MPI_Barrier(MPI_COMM_WORLD));
}

}  // namespace

int main(int argc, char** argv) {
  const std::string mode = argc > 1 ? argv[1] : "ok";
  try {
    memento::parallel::MpiSession session(&argc, &argv);
    run(session, mode);
  } catch (const memento::Error& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}
