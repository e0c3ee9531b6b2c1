// The NCCL communicator's watchdog: a failed or stuck NCCL call or collective ends the job with a
// message naming it, within a deadline, instead of hanging it (ARCHITECTURE contract 9; PyTorch's
// NCCL watchdog is the model). Only built with MEMENTO_WITH_CUDA.
//
// The communicator is non-blocking, so the host side of every NCCL call may return ncclInProgress:
// complete() polls it to the end. Collectives queued on the GPU are tracked by an event each:
// drain() polls them (the communicator's host waits), and a thread polls them while the host is
// busy elsewhere, or blocked on the compute stream, which a collective that never ends would hold
// for ever. Each poll reads ncclCommGetAsyncError (a network error, a peer that exited) and the
// deadline, parallel.nccl_timeout_s after the call or the collective was issued. On either:
// ncclCommAbort, then abort_job with the operation, its size, the communicator and the rank.
#pragma once

#include <cuda_runtime_api.h>
#include <nccl.h>

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <deque>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace memento::parallel {

class NcclWatchdog {
 public:
  using Clock = std::chrono::steady_clock;

  // Watches `comm` (set up or still being set up) on CUDA device `device`. `who` names it in
  // messages, e.g. "communicator 'dp' (rank 1 of 4, cuda:1)". timeout_s = 0: no deadline.
  NcclWatchdog(ncclComm_t comm, int device, std::string who, double timeout_s);
  // Stops the thread; destroys the events (call drain() first).
  ~NcclWatchdog();
  NcclWatchdog(const NcclWatchdog&) = delete;
  NcclWatchdog& operator=(const NcclWatchdog&) = delete;

  // After an NCCL call named `op` (moving `bytes`; 0 when not a transfer) returned `result`:
  // returns once its host side is done (at once for ncclSuccess; ncclInProgress is polled), fatal
  // on an error or past the deadline.
  void complete(ncclResult_t result, const char* op, size_t bytes);
  // Records an event on `stream` after the collective just queued there, and watches it until it
  // is done. Returns the event, for stream ordering only: it is reused once the collective is done.
  cudaEvent_t track(const char* op, size_t bytes, cudaStream_t stream);
  // Blocks the host until every tracked collective is done; fatal on an error or past a deadline.
  void drain();
  // Parks the calling thread for good once the job is failing (another thread is aborting the
  // communicator and then the job): called before every NCCL call on the communicator.
  static void stop_if_failing();

 private:
  struct InFlight {
    cudaEvent_t event;
    const char* op;
    size_t bytes;
    Clock::time_point issued;
  };

  // One look at the communicator for `op`, issued at `issued`: returns its state (ncclSuccess, or
  // ncclInProgress while a call's host side runs); fatal on an error state or past the deadline.
  ncclResult_t check(const char* op, size_t bytes, Clock::time_point issued);
  // Retires the finished collectives, oldest first, and check()s the oldest unfinished one.
  // Returns true when none is left. Needs mutex_.
  bool reap();
  // Calls done() until it returns true: the spin, then the sleep between polls, the one loop of
  // every host wait here.
  template <typename Done>
  static void poll_until(Done&& done);
  // The watchdog thread: reap() every kWatchInterval until stopped.
  void watch();
  // ncclCommAbort (given a grace period), then abort_job with `message`. The first caller wins.
  [[noreturn]] void fail(const std::string& message);
  std::string describe(const char* op, size_t bytes) const;

  ncclComm_t comm_;
  int device_;
  std::string who_;
  double timeout_s_;
  Clock::duration timeout_;  // zero: none

  std::mutex mutex_;  // guards everything below
  std::condition_variable wake_;
  bool stop_ = false;
  std::deque<InFlight> in_flight_;  // in queue order
  std::vector<cudaEvent_t> spare_;  // events of finished collectives, for reuse
  std::thread thread_;              // last: starts once the members above exist
};

}  // namespace memento::parallel
