#include "parallel/nccl_watchdog.h"

#include <algorithm>
#include <atomic>
#include <future>
#include <memory>
#include <utility>

#include "core/cuda/check.h"
#include "core/error.h"
#include "memory/resources.h"
#include "parallel/mpi_communicator.h"

namespace memento::parallel {
namespace {

using ::memento::detail::concat;

// A healthy wait ends within microseconds of the GPU finishing: yield for kSpin, then sleep
// between polls, from kFirstSleep doubling up to kLongestSleep, so that a long wait (a peer still
// at work) leaves the core to others.
constexpr auto kSpin = std::chrono::microseconds(100);
constexpr auto kFirstSleep = std::chrono::microseconds(50);
constexpr auto kLongestSleep = std::chrono::microseconds(1000);
// How often the thread looks at the collectives in flight: the delay before an error that no host
// wait sees ends the job.
constexpr auto kWatchInterval = std::chrono::milliseconds(100);
// How long ncclCommAbort may take before the job is aborted without it.
constexpr auto kAbortGrace = std::chrono::seconds(10);
// Longer timeouts are this one (31 years), which a steady_clock duration holds.
constexpr double kMaxTimeoutSeconds = 1e9;

// Set by the first failure in the process: a host wait and the thread may fail at once, and once
// ncclCommAbort runs, the communicator may be freed under any other caller.
std::atomic<bool> job_failing{false};

// Where a thread waits for the failing one to end the process.
[[noreturn]] void park() {
  for (;;) std::this_thread::sleep_for(std::chrono::seconds(1));
}

NcclWatchdog::Clock::duration to_duration(double seconds) {
  return std::chrono::duration_cast<NcclWatchdog::Clock::duration>(
      std::chrono::duration<double>(std::min(seconds, kMaxTimeoutSeconds)));
}

// "remote process exited or there was a network error (NET/IB : ...)".
std::string reason(ncclResult_t result) {
  // ncclGetLastError ignores its argument: the last error is per process.
  const char* last = ncclGetLastError(nullptr);
  return concat(ncclGetErrorString(result),
                last != nullptr && *last != '\0' ? concat(" (", last, ")") : std::string());
}

}  // namespace

NcclWatchdog::NcclWatchdog(ncclComm_t comm, int device, std::string who, double timeout_s)
    : comm_(comm),
      device_(device),
      who_(std::move(who)),
      timeout_s_(timeout_s),
      timeout_(to_duration(timeout_s)),
      thread_([this] { watch(); }) {}

NcclWatchdog::~NcclWatchdog() {
  {
    const std::lock_guard<std::mutex> lock(mutex_);
    stop_ = true;
  }
  wake_.notify_all();
  thread_.join();
  for (const InFlight& collective : in_flight_) (void)cudaEventDestroy(collective.event);
  for (const cudaEvent_t event : spare_) (void)cudaEventDestroy(event);
}

template <typename Done>
void NcclWatchdog::poll_until(Done&& done) {
  const Clock::time_point start = Clock::now();
  std::chrono::microseconds sleep = kFirstSleep;
  while (!done()) {
    if (Clock::now() - start < kSpin) {
      std::this_thread::yield();
    } else {
      std::this_thread::sleep_for(sleep);
      sleep = std::min(2 * sleep, kLongestSleep);
    }
  }
}

void NcclWatchdog::complete(ncclResult_t result, const char* op, size_t bytes) {
  stop_if_failing();
  if (result == ncclSuccess) return;
  if (result != ncclInProgress) fail(concat(describe(op, bytes), " failed: ", reason(result)));
  const Clock::time_point issued = Clock::now();
  poll_until([&] { return check(op, bytes, issued) == ncclSuccess; });
}

cudaEvent_t NcclWatchdog::track(const char* op, size_t bytes, cudaStream_t stream) {
  const std::lock_guard<std::mutex> lock(mutex_);
  cudaEvent_t event = nullptr;
  if (spare_.empty()) {
    CUDA_CHECK(cudaEventCreateWithFlags(&event, cudaEventDisableTiming));
  } else {
    event = spare_.back();
    spare_.pop_back();
  }
  CUDA_CHECK(cudaEventRecord(event, stream));
  in_flight_.push_back({event, op, bytes, Clock::now()});
  return event;
}

void NcclWatchdog::drain() {
  poll_until([this] {
    const std::lock_guard<std::mutex> lock(mutex_);
    return reap();
  });
}

ncclResult_t NcclWatchdog::check(const char* op, size_t bytes, Clock::time_point issued) {
  if (job_failing.load()) park();
  ncclResult_t state = ncclSuccess;
  const ncclResult_t query = ncclCommGetAsyncError(comm_, &state);
  if (query != ncclSuccess) state = query;
  if (state != ncclSuccess && state != ncclInProgress)
    fail(concat(describe(op, bytes), " failed: ", reason(state)));
  if (timeout_ != Clock::duration::zero() && Clock::now() - issued > timeout_)
    fail(concat(describe(op, bytes), " did not finish within ", timeout_s_,
                " s (parallel.nccl_timeout_s): a peer rank has probably died or hung, or the ranks "
                "issued different "
                "collectives"));
  return state;
}

bool NcclWatchdog::reap() {
  while (!in_flight_.empty()) {
    const InFlight& oldest = in_flight_.front();
    const cudaError_t status = cudaEventQuery(oldest.event);
    if (status == cudaErrorNotReady) {
      (void)cudaGetLastError();  // "not ready" is an answer, not an error for the next check
      check(oldest.op, oldest.bytes, oldest.issued);
      return false;
    }
    CUDA_CHECK(status);
    spare_.push_back(oldest.event);
    in_flight_.pop_front();
  }
  return true;
}

void NcclWatchdog::watch() {
  // An exception here would end the process through std::terminate, without MPI_Abort (the other
  // ranks would wait out the timeout): a CUDA error seen by this thread fails the job instead.
  try {
    CUDA_CHECK(cudaSetDevice(device_));  // the events belong to this device
    std::unique_lock<std::mutex> lock(mutex_);
    while (!wake_.wait_for(lock, kWatchInterval, [this] { return stop_; })) reap();
  } catch (const std::exception& e) {
    fail(concat("the NCCL watchdog of ", who_, " stopped: ", e.what()));
  }
}

void NcclWatchdog::stop_if_failing() {
  if (job_failing.load()) park();
}

[[noreturn]] void NcclWatchdog::fail(const std::string& message) {
  if (job_failing.exchange(true)) park();  // one message, one abort
  // Say why first: the abort below may take its whole grace period, or crash a thread that was
  // inside an NCCL call on this communicator.
  detail::print_fatal(__FILE__, __LINE__, message);
  if (comm_ != nullptr) {
    // ncclCommAbort stops NCCL's kernels and threads on this rank. It gets a grace period only: a
    // wedged NCCL could hang it, and the job must end regardless.
    auto aborted = std::make_shared<std::promise<void>>();
    std::future<void> done = aborted->get_future();
    std::thread([comm = comm_, aborted] {
      (void)ncclCommAbort(comm);
      aborted->set_value();
    }).detach();
    (void)done.wait_for(kAbortGrace);
  }
  detail::end_job();
}

std::string NcclWatchdog::describe(const char* op, size_t bytes) const {
  return concat(
      "NCCL ", op,
      bytes > 0 ? concat(" of ", format_bytes(static_cast<double>(bytes))) : std::string(), " on ",
      who_);
}

}  // namespace memento::parallel
