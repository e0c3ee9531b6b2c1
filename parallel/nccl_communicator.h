// The NCCL backend of the communicator interface (GPU tensors), and NCCL_CHECK, the CHECK family's
// member for NCCL calls. Only built with MEMENTO_WITH_CUDA.
//
// Streams: every collective runs on the communicator's own stream, ordered after the work already
// queued on the compute stream (the legacy default stream) by an event, so the collective sees
// what the compute stream wrote. A blocking call (all_reduce, reduce_scatter, all_gather,
// broadcast, send, recv) then makes the compute stream wait for the collective: stream order, the
// host does not block. all_reduce_async's Work::wait() does the same later, so compute work queued
// in between overlaps the collective; barrier() also blocks the host until the collective is done.
//
// Failures: the communicator is non-blocking and watched (parallel/nccl_watchdog.h). A collective
// or NCCL call that fails (a peer exited, a network error) or does not finish within the
// timeout (parallel.nccl_timeout_s, default 600 s; 0: no deadline) aborts the communicator and then
// the job, with a message naming the operation, its size, the communicator and the rank, whether
// the host is waiting here or elsewhere (e.g. on the compute stream, which waits for collectives).
#pragma once

#include <cuda_runtime_api.h>
#include <nccl.h>

#include <memory>
#include <string>

#include "core/parallel/communicator.h"
#include "core/tensor.h"

namespace memento::parallel {

namespace detail {
// Prints rank, host, file, line, the failed call, ncclGetErrorString and ncclGetLastError, then
// aborts every rank.
[[noreturn]] void nccl_fatal(const char* file, int line, const char* expr, ncclResult_t result);
}  // namespace detail

}  // namespace memento::parallel

// Evaluates an NCCL call once; any result but ncclSuccess is fatal for the whole job.
#define NCCL_CHECK(expr)                                                                   \
  do {                                                                                     \
    const ncclResult_t memento_nccl_rc = (expr);                                           \
    if (memento_nccl_rc != ncclSuccess)                                                    \
      ::memento::parallel::detail::nccl_fatal(__FILE__, __LINE__, #expr, memento_nccl_rc); \
  } while (0)

namespace memento::parallel {

class NcclWatchdog;

// A communicator over the ranks of a host communicator (MPI, or SelfCommunicator for one rank),
// on the CUDA device that is current when it is built; one GPU per rank (NCCL refuses two ranks on
// one GPU). Buffers are tensors on that GPU; kMeta tensors make every collective a no-op after the
// shape checks. Reductions take f32, f64, bf16, f16, i32, i64 (and fp8 with NCCL >= 2.24);
// all_gather, broadcast, send and recv move any dtype. Bad calls throw ShapeError naming the op,
// the communicator and the tensor (its device, for a tensor on the CPU or another GPU).
// Collectives are called by every rank in the same order, from one host thread.
class NcclCommunicator final : public Communicator {
 public:
  // Collective over `host`: rank 0 makes the NCCL id, host->broadcast() hands it round, every rank
  // joins on the current device. The communicator keeps `host` for split(). timeout_s: the
  // watchdog's deadline for every NCCL call and collective, 0 for none.
  NcclCommunicator(std::unique_ptr<Communicator> host, std::string name, double timeout_s);
  // Waits for the collectives queued on its stream, then ncclCommFinalize and ncclCommDestroy;
  // bounded by the timeout like every wait here (past it the job is aborted), and never throws.
  ~NcclCommunicator() override;
  NcclCommunicator(const NcclCommunicator&) = delete;
  NcclCommunicator& operator=(const NcclCommunicator&) = delete;

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  std::string name() const override { return name_; }
  int device() const { return device_; }           // the CUDA device index of this rank
  cudaStream_t stream() const { return stream_; }  // where the collectives run
  ncclComm_t handle() const { return comm_; }

  void all_reduce(const TensorView& buffer, ReduceOp op = ReduceOp::kSum) override;
  // wait() orders the compute stream after the all-reduce and returns at once; test() is true when
  // the GPU has finished it. Dropping the Work unwaited also orders the compute stream after it
  // (so the buffer is not freed under the collective).
  std::unique_ptr<Work> all_reduce_async(const TensorView& buffer,
                                         ReduceOp op = ReduceOp::kSum) override;
  // In place when output is chunk rank() of input (NCCL's in-place form).
  void reduce_scatter(const TensorView& input, const TensorView& output,
                      ReduceOp op = ReduceOp::kSum) override;
  void all_gather(const TensorView& input, const TensorView& output) override;
  void broadcast(const TensorView& buffer, int root) override;
  // Point to point; tags are not matched (NCCL has none): messages between two ranks arrive in the
  // order they were sent, and the sizes must agree (NCCL cannot check them). A rank cannot send
  // to itself (ShapeError): NCCL pairs such a send with its recv only inside one group.
  void send(const TensorView& buffer, int peer, int tag = 0) override;
  void recv(const TensorView& buffer, int peer, int tag = 0) override;
  // A one-element all-reduce, then the host waits for it (and for the compute work before it).
  void barrier() override;
  // Splits the host communicator and builds an NcclCommunicator over the part, on this device.
  // Returns null where the host's split does (MPI_UNDEFINED).
  std::unique_ptr<Communicator> split(int color, int key, const std::string& name) override;

 private:
  // Orders `stream_` after the compute stream, runs `launch` (the NCCL call `op`, moving `bytes`;
  // it returns the call's result) on it, and hands the collective to the watchdog. Returns an
  // event after the collective, for stream ordering only.
  template <typename Launch>
  cudaEvent_t enqueue(const char* op, size_t bytes, Launch&& launch);
  // enqueue(), then the compute stream waits for the collective.
  template <typename Launch>
  void run_blocking(const char* op, size_t bytes, Launch&& launch);

  std::unique_ptr<Communicator> host_;  // the bootstrap communicator over the same ranks
  std::string name_;
  int rank_ = 0;
  int size_ = 1;
  int device_ = 0;
  double timeout_s_ = 0;  // handed to split()'s communicators
  ncclComm_t comm_ = nullptr;
  std::unique_ptr<NcclWatchdog> watchdog_;  // every wait on comm_ and its collectives
  // Raw handles owned here: a non-blocking stream (cuda::CudaStream makes blocking ones, which
  // the legacy default stream would serialise with, undoing the overlap) and an event without
  // timing, the cheap kind for ordering.
  cudaStream_t stream_ = nullptr;
  cudaEvent_t ready_ = nullptr;  // the compute stream's queue as a collective starts
  Tensor barrier_token_;         // (1) i32 on device_, made by the first barrier()
};

// The trainer's entry point: an NcclCommunicator over the ranks of `host` (e.g. ProcessGroups'
// dp group), on the current CUDA device. It splits `host` into a copy that it owns, so `host`
// need not outlive it. Every rank of `host` must call it. timeout_s: as for the constructor.
std::unique_ptr<NcclCommunicator> make_nccl_communicator(Communicator& host,
                                                         const std::string& name, double timeout_s);

}  // namespace memento::parallel
