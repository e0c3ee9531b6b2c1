#include "parallel/mpi_communicator.h"

#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <exception>
#include <functional>
#include <future>
#include <mutex>
#include <thread>
#include <vector>

#include "core/error.h"
#include "core/log.h"
#include "core/parallel/collective_checks.h"
#include "core/parallel/self_communicator.h"

namespace memento::parallel {
using detail::mpi_active;

namespace {

// Only the dtypes check_buffer admits reach here.
MPI_Datatype mpi_type(DType dtype) {
  switch (dtype) {
    case DType::kF32:
      return MPI_FLOAT;
    case DType::kF64:
      return MPI_DOUBLE;
    case DType::kI32:
      return MPI_INT32_T;
    case DType::kI64:
      return MPI_INT64_T;
    default:
      break;
  }
  MEMENTO_CHECK(false, "no MPI type for ", dtype_name(dtype));
  return MPI_DATATYPE_NULL;
}

MPI_Op mpi_op(ReduceOp op) {
  switch (op) {
    case ReduceOp::kSum:
      return MPI_SUM;
    case ReduceOp::kMax:
      return MPI_MAX;
    case ReduceOp::kMin:
      return MPI_MIN;
  }
  MEMENTO_CHECK(false, "unknown ReduceOp ", static_cast<int>(op));
  return MPI_OP_NULL;
}

int count_of(const TensorView& t) { return static_cast<int>(t.numel()); }

class MpiWork final : public Work {
 public:
  explicit MpiWork(MPI_Request request) : request_(request) {}
  // A Work dropped unfinished must not leave MPI writing into a buffer that is gone.
  ~MpiWork() override {
    if (request_ != MPI_REQUEST_NULL && mpi_active())
      MPI_CHECK(MPI_Wait(&request_, MPI_STATUS_IGNORE));
  }
  MpiWork(const MpiWork&) = delete;
  MpiWork& operator=(const MpiWork&) = delete;

  void wait() override { MPI_CHECK(MPI_Wait(&request_, MPI_STATUS_IGNORE)); }
  bool test() override {
    int done = 0;
    MPI_CHECK(MPI_Test(&request_, &done, MPI_STATUS_IGNORE));
    return done != 0;
  }

 private:
  MPI_Request request_;  // MPI_REQUEST_NULL once complete
};

class DoneWork final : public Work {
 public:
  void wait() override {}
  bool test() override { return true; }
};

}  // namespace

namespace detail {

bool mpi_active() {
  int initialized = 0;
  int finalized = 0;
  MPI_Initialized(&initialized);
  MPI_Finalized(&finalized);
  return initialized && !finalized;
}

void print_fatal(const char* file, int line, const std::string& message) {
  int rank = -1;
  int size = 0;
  if (mpi_active()) {
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
  }
  char host[256] = "?";
  gethostname(host, sizeof(host) - 1);
  std::fprintf(stderr, "[rank %d/%d on %s] FATAL %s:%d: %s\n", rank, size, host, file, line,
               message.c_str());
  std::fflush(stderr);
}

[[noreturn]] void end_job() {
  if (mpi_active()) MPI_Abort(MPI_COMM_WORLD, 1);
  std::abort();
}

[[noreturn]] void abort_job(const char* file, int line, const std::string& message) {
  print_fatal(file, line, message);
  end_job();
}

[[noreturn]] void mpi_fatal(const char* file, int line, const char* expr, int code) {
  char error[MPI_MAX_ERROR_STRING] = {};
  int length = 0;
  if (MPI_Error_string(code, error, &length) != MPI_SUCCESS) {
    std::snprintf(error, sizeof(error), "MPI error code %d", code);
  }
  abort_job(file, line, std::string(expr) + " failed: " + error);
}

}  // namespace detail

// ---------------------------------------------------------------------------------------------
// MpiSession

MpiSession::MpiSession(int* argc, char*** argv) {
  int initialized = 0;
  MPI_CHECK(MPI_Initialized(&initialized));
  if (!initialized) {
    int provided = 0;
    // MULTIPLE lets a communicator's worker thread run bucket all-reduces during backward.
    MPI_CHECK(MPI_Init_thread(argc, argv, MPI_THREAD_MULTIPLE, &provided));
    owns_ = true;
    MEMENTO_CHECK(provided >= MPI_THREAD_FUNNELED, "MPI provides thread level ", provided,
                  ", below MPI_THREAD_FUNNELED");
  }
  MPI_CHECK(MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN));
  MPI_CHECK(MPI_Comm_rank(MPI_COMM_WORLD, &rank_));
  MPI_CHECK(MPI_Comm_size(MPI_COMM_WORLD, &size_));
  set_log_rank(rank_, size_);
  uncaught_exceptions_ = std::uncaught_exceptions();
}

MpiSession::~MpiSession() {
  if (!owns_ || failed_ || std::uncaught_exceptions() > uncaught_exceptions_) return;
  if (mpi_active()) MPI_Finalize();
}

bool MpiSession::launched_under_mpi() {
  for (const char* name : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK"}) {
    if (std::getenv(name) != nullptr) return true;
  }
  return false;
}

// ---------------------------------------------------------------------------------------------
// MpiCommunicator

MpiCommunicator::MpiCommunicator(MPI_Comm comm, std::string name, Ownership ownership)
    : comm_(comm), name_(std::move(name)), ownership_(ownership) {
  MPI_CHECK(MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN));
  MPI_CHECK(MPI_Comm_rank(comm_, &rank_));
  MPI_CHECK(MPI_Comm_size(comm_, &size_));
}

// Open MPI's non-blocking MPI_Iallreduce (libnbc) ran 2-3x slower than its tuned blocking
// MPI_Allreduce on the same bytes (scripts/bench_allreduce.sh). So async all-reduces are blocking
// calls made in order by one thread per communicator, which overlaps them with backward and keeps
// the tuned algorithms. Every rank issues them in the same order, as MPI requires.
class MpiCommunicator::AsyncWorker {
 public:
  AsyncWorker() : thread_([this] { loop(); }) {}
  ~AsyncWorker() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stop_ = true;
    }
    ready_.notify_one();
    thread_.join();
  }
  std::future<void> submit(std::function<void()> job) {
    std::packaged_task<void()> task(std::move(job));
    std::future<void> done = task.get_future();
    {
      std::lock_guard<std::mutex> lock(mutex_);
      queue_.push_back(std::move(task));
    }
    ready_.notify_one();
    return done;
  }

 private:
  void loop() {
    for (;;) {
      std::packaged_task<void()> task;
      {
        std::unique_lock<std::mutex> lock(mutex_);
        ready_.wait(lock, [this] { return stop_ || !queue_.empty(); });
        if (queue_.empty()) return;
        task = std::move(queue_.front());
        queue_.pop_front();
      }
      task();
    }
  }

  std::mutex mutex_;
  std::condition_variable ready_;
  std::deque<std::packaged_task<void()>> queue_;
  bool stop_ = false;
  std::thread thread_;
};

namespace {
class FutureWork final : public Work {
 public:
  explicit FutureWork(std::future<void> done) : done_(std::move(done)) {}
  void wait() override {
    if (done_.valid()) done_.get();
  }
  bool test() override {
    return !done_.valid() || done_.wait_for(std::chrono::seconds(0)) == std::future_status::ready;
  }

 private:
  std::future<void> done_;
};

bool thread_multiple() {
  int provided = MPI_THREAD_SINGLE;
  MPI_Query_thread(&provided);
  return provided >= MPI_THREAD_MULTIPLE;
}
}  // namespace

MpiCommunicator::~MpiCommunicator() {
  worker_.reset();  // finishes queued work before the communicator goes
  // After MPI_Finalize a communicator can no longer be freed (nor needs to be).
  if (ownership_ == Ownership::kOwned && mpi_active()) MPI_CHECK(MPI_Comm_free(&comm_));
}

void MpiCommunicator::all_reduce(const TensorView& buffer, ReduceOp op) {
  if (detail::check_buffer(*this, "all_reduce", buffer)) return;
  MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, buffer.raw(), count_of(buffer), mpi_type(buffer.dtype()),
                          mpi_op(op), comm_));
}

std::unique_ptr<Work> MpiCommunicator::all_reduce_async(const TensorView& buffer, ReduceOp op) {
  if (detail::check_buffer(*this, "all_reduce_async", buffer)) return std::make_unique<DoneWork>();
  if (thread_multiple()) {
    if (!worker_) worker_ = std::make_unique<AsyncWorker>();
    return std::make_unique<FutureWork>(
        worker_->submit([this, buffer, op] { all_reduce(buffer, op); }));
  }
  MPI_Request request = MPI_REQUEST_NULL;
  MPI_CHECK(MPI_Iallreduce(MPI_IN_PLACE, buffer.raw(), count_of(buffer), mpi_type(buffer.dtype()),
                           mpi_op(op), comm_, &request));
  return std::make_unique<MpiWork>(request);
}

void MpiCommunicator::reduce_scatter(const TensorView& input, const TensorView& output,
                                     ReduceOp op) {
  if (detail::check_reduce_scatter(*this, input, output)) return;
  if (output.bytes() > 0 && detail::is_chunk_of(output, input, rank_)) {
    // MPI's in-place form leaves the result in chunk 0, not chunk rank(): go through a copy.
    std::vector<char> result(output.bytes());
    MPI_CHECK(MPI_Reduce_scatter_block(input.raw(), result.data(), count_of(output),
                                       mpi_type(output.dtype()), mpi_op(op), comm_));
    std::memcpy(output.raw(), result.data(), result.size());
    return;
  }
  MPI_CHECK(MPI_Reduce_scatter_block(input.raw(), output.raw(), count_of(output),
                                     mpi_type(output.dtype()), mpi_op(op), comm_));
}

void MpiCommunicator::all_gather(const TensorView& input, const TensorView& output) {
  if (detail::check_all_gather(*this, input, output)) return;
  const MPI_Datatype type = mpi_type(output.dtype());
  if (input.bytes() > 0 && detail::is_chunk_of(input, output, rank_)) {
    MPI_CHECK(MPI_Allgather(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, output.raw(), count_of(input), type,
                            comm_));
    return;
  }
  MPI_CHECK(MPI_Allgather(input.raw(), count_of(input), type, output.raw(), count_of(input), type,
                          comm_));
}

void MpiCommunicator::broadcast(const TensorView& buffer, int root) {
  const bool meta = detail::check_buffer(*this, "broadcast", buffer);
  detail::check_peer(*this, "broadcast", "root", root);
  if (meta) return;
  MPI_CHECK(MPI_Bcast(buffer.raw(), count_of(buffer), mpi_type(buffer.dtype()), root, comm_));
}

void MpiCommunicator::send(const TensorView& buffer, int peer, int tag) {
  const bool meta = detail::check_buffer(*this, "send", buffer);
  detail::check_peer(*this, "send", "peer", peer);
  if (meta) return;
  MPI_CHECK(MPI_Send(buffer.raw(), count_of(buffer), mpi_type(buffer.dtype()), peer, tag, comm_));
}

void MpiCommunicator::recv(const TensorView& buffer, int peer, int tag) {
  const bool meta = detail::check_buffer(*this, "recv", buffer);
  detail::check_peer(*this, "recv", "peer", peer);
  if (meta) return;
  const MPI_Datatype type = mpi_type(buffer.dtype());
  MPI_Status status;
  MPI_CHECK(MPI_Recv(buffer.raw(), count_of(buffer), type, peer, tag, comm_, &status));
  int received = 0;
  MPI_CHECK(MPI_Get_count(&status, type, &received));
  MEMENTO_EXPECT(received == count_of(buffer), ShapeError, "recv on '", name_, "' (", size_,
                 " ranks): rank ", peer, " sent ", received, " elements for the buffer ",
                 buffer.shape().str(), " of ", buffer.numel());
}

void MpiCommunicator::barrier() { MPI_CHECK(MPI_Barrier(comm_)); }

std::unique_ptr<Communicator> MpiCommunicator::split(int color, int key, const std::string& name) {
  MPI_Comm child = MPI_COMM_NULL;
  MPI_CHECK(MPI_Comm_split(comm_, color, key, &child));
  if (child == MPI_COMM_NULL) return nullptr;
  return std::make_unique<MpiCommunicator>(child, name, Ownership::kOwned);
}

// ---------------------------------------------------------------------------------------------

std::unique_ptr<Communicator> make_world_communicator() {
  if (mpi_active()) return std::make_unique<MpiCommunicator>(MPI_COMM_WORLD, "world");
  MEMENTO_CHECK(!MpiSession::launched_under_mpi(),
                "launched under mpirun but MPI is not initialised: hold an MpiSession in main() "
                "before make_world_communicator()");
  return std::make_unique<SelfCommunicator>("world");
}

}  // namespace memento::parallel
