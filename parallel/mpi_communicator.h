// The MPI backend of the communicator interface (CPU tensors, and every test of parallel logic),
// the MPI session that main() holds, and MPI_CHECK, the CHECK family's member for MPI calls.
#pragma once

#include <mpi.h>

#include <memory>
#include <string>

#include "core/parallel/communicator.h"

namespace memento::parallel {

namespace detail {
// Prints rank, host, file, line, the failed call and MPI's error string, then aborts every rank.
[[noreturn]] void mpi_fatal(const char* file, int line, const char* expr, int code);
// Prints "[rank r/n on host] FATAL file:line: message" and aborts every rank (MPI_Abort when MPI
// is running, else this process): the end of every backend's CHECK macro.
[[noreturn]] void abort_job(const char* file, int line, const std::string& message);
// abort_job's two halves, for a caller with work between them (the NCCL watchdog aborts its
// communicator after saying why): the FATAL line on stderr, flushed; MPI_Abort, else abort().
void print_fatal(const char* file, int line, const std::string& message);
[[noreturn]] void end_job();
// True between MPI_Init and MPI_Finalize.
bool mpi_active();
}  // namespace detail

}  // namespace memento::parallel

// Evaluates an MPI call once; any result but MPI_SUCCESS is fatal for the whole job.
#define MPI_CHECK(expr)                                                                  \
  do {                                                                                   \
    const int memento_mpi_rc = (expr);                                                   \
    if (memento_mpi_rc != MPI_SUCCESS)                                                   \
      ::memento::parallel::detail::mpi_fatal(__FILE__, __LINE__, #expr, memento_mpi_rc); \
  } while (0)

namespace memento::parallel {

// Owns MPI for the life of the process: MPI_Init_thread (MPI_THREAD_FUNNELED) in the constructor,
// MPI_Finalize in the destructor. If MPI is already initialised it does neither. It sets
// MPI_ERRORS_RETURN on MPI_COMM_WORLD (so failures reach MPI_CHECK) and the log's rank/world.
class MpiSession {
 public:
  explicit MpiSession(int* argc = nullptr, char*** argv = nullptr);
  ~MpiSession();
  MpiSession(const MpiSession&) = delete;
  MpiSession& operator=(const MpiSession&) = delete;

  // True when the launch environment says this process is one rank of an MPI job (mpirun,
  // srun, ...): OMPI_COMM_WORLD_SIZE, PMI_SIZE or PMIX_RANK is set.
  static bool launched_under_mpi();

  int rank() const { return rank_; }
  int size() const { return size_; }

  // This process is leaving on an error: the destructor skips MPI_Finalize, which would wait
  // for ranks that may never get there, so mpirun ends the job instead. A session destroyed by
  // an exception does the same on its own.
  void mark_failed() { failed_ = true; }

 private:
  bool owns_ = false;
  bool failed_ = false;
  int uncaught_exceptions_ = 0;
  int rank_ = 0;
  int size_ = 1;
};

// A communicator over an MPI_Comm. Collectives take CPU tensors of f32, f64, i32 or i64 and throw
// ShapeError naming the op, the communicator and the shapes on a bad call; kMeta tensors make
// every collective a no-op (after the shape checks), so a dry run goes through parallel code.
class MpiCommunicator final : public Communicator {
 public:
  enum class Ownership : uint8_t { kBorrowed, kOwned };  // kOwned: MPI_Comm_free at destruction

  MpiCommunicator(MPI_Comm comm, std::string name, Ownership ownership = Ownership::kBorrowed);
  ~MpiCommunicator() override;
  MpiCommunicator(const MpiCommunicator&) = delete;
  MpiCommunicator& operator=(const MpiCommunicator&) = delete;

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  std::string name() const override { return name_; }
  MPI_Comm handle() const { return comm_; }

  void all_reduce(const TensorView& buffer, ReduceOp op = ReduceOp::kSum) override;
  std::unique_ptr<Work> all_reduce_async(const TensorView& buffer,
                                         ReduceOp op = ReduceOp::kSum) override;
  // Also in place: output may be chunk rank() of input.
  void reduce_scatter(const TensorView& input, const TensorView& output,
                      ReduceOp op = ReduceOp::kSum) override;
  void all_gather(const TensorView& input, const TensorView& output) override;
  void broadcast(const TensorView& buffer, int root) override;
  void send(const TensorView& buffer, int peer, int tag = 0) override;
  void recv(const TensorView& buffer, int peer, int tag = 0) override;
  void barrier() override;
  // Returns null for color MPI_UNDEFINED (this rank joins no communicator).
  std::unique_ptr<Communicator> split(int color, int key, const std::string& name) override;

 private:
  class AsyncWorker;

  MPI_Comm comm_;
  std::string name_;
  Ownership ownership_;
  int rank_ = 0;
  int size_ = 1;
  // Runs all_reduce_async's blocking MPI_Allreduce calls in order on one thread, started on
  // first use (only with MPI_THREAD_MULTIPLE; otherwise MPI_Iallreduce).
  std::unique_ptr<AsyncWorker> worker_;
};

// The job's world: MPI_COMM_WORLD when MPI is initialised (an MpiSession is alive), a
// SelfCommunicator when the process runs alone. Launched under mpirun without an MpiSession is
// a programming error (fatal).
std::unique_ptr<Communicator> make_world_communicator();

}  // namespace memento::parallel
