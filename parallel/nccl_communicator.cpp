#include "parallel/nccl_communicator.h"

#include <array>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <utility>

#include "core/cuda/check.h"
#include "core/error.h"
#include "core/parallel/collective_checks.h"
#include "parallel/mpi_communicator.h"
#include "parallel/nccl_watchdog.h"

namespace memento::parallel {
namespace {

// The stream every op of core/cuda/ runs on by default. Named explicitly so that a build with
// per-thread default streams still orders against the same stream as the memory pool.
cudaStream_t compute_stream() { return cudaStreamLegacy; }

using detail::overlaps;
using detail::where;

// A buffer on this communicator's GPU, or kMeta. Returns true for kMeta (the op does nothing).
bool check_buffer(const NcclCommunicator& comm, const char* op, const TensorView& buffer) {
  const Device gpu{DeviceKind::kCuda, comm.device()};
  MEMENTO_EXPECT(buffer.is_meta() || buffer.device() == gpu, ShapeError, where(comm, op),
                 ": tensor ", buffer.shape().str(), " is on ", device_name(buffer.device()),
                 "; this NCCL communicator takes tensors on ", device_name(gpu));
  return buffer.is_meta();
}

// Mirrors collective_checks' rules for input/output pairs: same dtype and device, and overlap only
// as chunk `rank` (NCCL's in-place forms).
bool check_pair(const NcclCommunicator& comm, const char* op, const TensorView& input,
                const TensorView& output) {
  const bool meta = check_buffer(comm, op, input);
  check_buffer(comm, op, output);
  detail::check_same_dtype_and_device(comm, op, input, output);
  return meta;
}

// The element type of a reduction; ShapeError for dtypes NCCL cannot add (u16).
ncclDataType_t reduce_type(const Communicator& comm, const char* op, const TensorView& buffer) {
  switch (buffer.dtype()) {
    case DType::kF32:
      return ncclFloat32;
    case DType::kF64:
      return ncclFloat64;
    case DType::kBF16:
      return ncclBfloat16;
    case DType::kF16:
      return ncclFloat16;
    case DType::kI32:
      return ncclInt32;
    case DType::kI64:
      return ncclInt64;
#if NCCL_VERSION_CODE >= NCCL_VERSION(2, 24, 0)
    case DType::kF8E4M3:
      return ncclFloat8e4m3;
    case DType::kF8E5M2:
      return ncclFloat8e5m2;
#endif
    default:
      break;
  }
  throw ShapeError(::memento::detail::concat(where(comm, op), ": tensor ", buffer.shape().str(),
                                             " is ", dtype_name(buffer.dtype()),
                                             "; NCCL reductions take f32, f64, bf16, f16, i32 or "
                                             "i64"));
}

ncclRedOp_t nccl_op(ReduceOp op) {
  switch (op) {
    case ReduceOp::kSum:
      return ncclSum;
    case ReduceOp::kMax:
      return ncclMax;
    case ReduceOp::kMin:
      return ncclMin;
  }
  MEMENTO_CHECK(false, "unknown ReduceOp ", static_cast<int>(op));
  return ncclSum;
}

void check_not_self(const NcclCommunicator& comm, const char* op, int peer) {
  MEMENTO_EXPECT(peer != comm.rank(), ShapeError, where(comm, op), ": peer ", peer,
                 " is this rank; NCCL cannot send to itself outside a group");
}

cudaEvent_t make_event() {
  cudaEvent_t event = nullptr;
  CUDA_CHECK(cudaEventCreateWithFlags(&event, cudaEventDisableTiming));
  return event;
}

// The compute stream of `device` waits for `event` (stream order; the host goes on).
void order_compute_after(int device, cudaEvent_t event) {
  cuda::DeviceGuard guard(device);
  CUDA_CHECK(cudaStreamWaitEvent(compute_stream(), event, 0));
}

// An all-reduce queued on the communicator's stream, ending at `done_` (owned here). A collective
// that never ends is the watchdog's to report; wait() and test() never block the host.
class NcclWork final : public Work {
 public:
  NcclWork(int device, cudaEvent_t done) : device_(device), done_(done) {}
  cudaEvent_t event() const { return done_; }
  ~NcclWork() override {
    if (!waited_) order_compute_after(device_, done_);
    (void)cudaEventDestroy(done_);
  }
  NcclWork(const NcclWork&) = delete;
  NcclWork& operator=(const NcclWork&) = delete;

  void wait() override {
    if (waited_) return;
    order_compute_after(device_, done_);
    waited_ = true;
  }
  bool test() override {
    const cudaError_t status = cudaEventQuery(done_);
    if (status == cudaErrorNotReady) {
      (void)cudaGetLastError();  // "not ready" is an answer, not an error for the next check
      return false;
    }
    CUDA_CHECK(status);
    return true;
  }

 private:
  int device_;
  cudaEvent_t done_;
  bool waited_ = false;
};

class DoneWork final : public Work {
 public:
  void wait() override {}
  bool test() override { return true; }
};

}  // namespace

namespace detail {

[[noreturn]] void nccl_fatal(const char* file, int line, const char* expr, ncclResult_t result) {
  // ncclGetLastError ignores its argument: the last error is per process.
  abort_job(file, line,
            ::memento::detail::concat("NCCL_CHECK failed: ", expr, ": ", ncclGetErrorString(result),
                                      " (", ncclGetLastError(nullptr), ")"));
}

}  // namespace detail

NcclCommunicator::NcclCommunicator(std::unique_ptr<Communicator> host, std::string name,
                                   double timeout_s)
    : host_(std::move(host)), name_(std::move(name)), timeout_s_(timeout_s) {
  MEMENTO_CHECK(host_ != nullptr, "NcclCommunicator '", name_, "' needs a host communicator");
  MEMENTO_CHECK(timeout_s >= 0, "NcclCommunicator '", name_, "': timeout ", timeout_s, " s");
  rank_ = host_->rank();
  size_ = host_->size();
  CUDA_CHECK(cudaGetDevice(&device_));

  // The id travels as i64 words: every host backend broadcasts those.
  ncclUniqueId id{};
  if (rank_ == 0) NCCL_CHECK(ncclGetUniqueId(&id));
  static_assert(sizeof(ncclUniqueId) % sizeof(int64_t) == 0);
  std::array<int64_t, sizeof(ncclUniqueId) / sizeof(int64_t)> words{};
  std::memcpy(words.data(), &id, sizeof(id));
  host_->broadcast(TensorView(words.data(), Shape{static_cast<int64_t>(words.size())}, DType::kI64),
                   0);
  std::memcpy(&id, words.data(), sizeof(id));
  // Non-blocking: no NCCL call waits inside NCCL (set-up, a launch that connects to peers,
  // finalize), so that the watchdog can bound every wait and abort.
  ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
  config.blocking = 0;
  const ncclResult_t init = ncclCommInitRankConfig(&comm_, size_, id, rank_, &config);
  watchdog_ = std::make_unique<NcclWatchdog>(
      comm_, device_,
      ::memento::detail::concat("communicator '", name_, "' (rank ", rank_, " of ", size_,
                                ", cuda:", device_, ")"),
      timeout_s);
  watchdog_->complete(init, "communicator set-up (ncclCommInitRankConfig)", 0);

  CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
  ready_ = make_event();
}

NcclCommunicator::~NcclCommunicator() {
  cuda::DeviceGuard guard(device_);
  watchdog_->drain();
  watchdog_->complete(ncclCommFinalize(comm_), "communicator shutdown (ncclCommFinalize)", 0);
  watchdog_.reset();
  // After a finished finalize, destroy only frees this rank's resources: it cannot wait.
  NCCL_CHECK(ncclCommDestroy(comm_));
  (void)cudaEventDestroy(ready_);
  (void)cudaStreamDestroy(stream_);
}

template <typename Launch>
cudaEvent_t NcclCommunicator::enqueue(const char* op, size_t bytes, Launch&& launch) {
  cuda::DeviceGuard guard(device_);
  CUDA_CHECK(cudaEventRecord(ready_, compute_stream()));
  CUDA_CHECK(cudaStreamWaitEvent(stream_, ready_, 0));
  // Until a launch's ncclInProgress has become ncclSuccess, nothing else may go on stream_.
  NcclWatchdog::stop_if_failing();
  watchdog_->complete(launch(), op, bytes);
  return watchdog_->track(op, bytes, stream_);
}

template <typename Launch>
void NcclCommunicator::run_blocking(const char* op, size_t bytes, Launch&& launch) {
  order_compute_after(device_, enqueue(op, bytes, std::forward<Launch>(launch)));
}

void NcclCommunicator::all_reduce(const TensorView& buffer, ReduceOp op) {
  const bool meta = check_buffer(*this, "all_reduce", buffer);
  const ncclDataType_t type = reduce_type(*this, "all_reduce", buffer);
  if (meta || buffer.numel() == 0) return;
  run_blocking("all_reduce", buffer.bytes(), [&] {
    return ncclAllReduce(buffer.raw(), buffer.raw(), static_cast<size_t>(buffer.numel()), type,
                         nccl_op(op), comm_, stream_);
  });
}

std::unique_ptr<Work> NcclCommunicator::all_reduce_async(const TensorView& buffer, ReduceOp op) {
  const bool meta = check_buffer(*this, "all_reduce_async", buffer);
  const ncclDataType_t type = reduce_type(*this, "all_reduce_async", buffer);
  if (meta || buffer.numel() == 0) return std::make_unique<DoneWork>();
  cuda::DeviceGuard guard(device_);
  // Each Work has its own event: test() asks about this all-reduce, not the latest one.
  auto work = std::make_unique<NcclWork>(device_, make_event());
  enqueue("all_reduce_async", buffer.bytes(), [&] {
    return ncclAllReduce(buffer.raw(), buffer.raw(), static_cast<size_t>(buffer.numel()), type,
                         nccl_op(op), comm_, stream_);
  });
  CUDA_CHECK(cudaEventRecord(work->event(), stream_));
  return work;
}

void NcclCommunicator::reduce_scatter(const TensorView& input, const TensorView& output,
                                      ReduceOp op) {
  const char* what = "reduce_scatter";
  const bool meta = check_pair(*this, what, input, output);
  const ncclDataType_t type = reduce_type(*this, what, output);
  MEMENTO_EXPECT(input.numel() == size_ * output.numel(), ShapeError, where(*this, what),
                 ": input ", input.shape().str(), " must hold ", size_, " × output ",
                 output.shape().str(), " = ", size_ * output.numel(), " elements, not ",
                 input.numel());
  if (meta || output.numel() == 0) return;
  MEMENTO_EXPECT(!overlaps(input, output) || detail::is_chunk_of(output, input, rank_), ShapeError,
                 where(*this, what), ": output overlaps input other than as chunk ", rank_,
                 " of it");
  run_blocking(what, input.bytes(), [&] {
    return ncclReduceScatter(input.raw(), output.raw(), static_cast<size_t>(output.numel()), type,
                             nccl_op(op), comm_, stream_);
  });
}

void NcclCommunicator::all_gather(const TensorView& input, const TensorView& output) {
  const char* what = "all_gather";
  const bool meta = check_pair(*this, what, input, output);
  MEMENTO_EXPECT(output.numel() == size_ * input.numel(), ShapeError, where(*this, what),
                 ": output ", output.shape().str(), " must hold ", size_, " × input ",
                 input.shape().str(), " = ", size_ * input.numel(), " elements, not ",
                 output.numel());
  if (meta || input.numel() == 0) return;
  MEMENTO_EXPECT(!overlaps(input, output) || detail::is_chunk_of(input, output, rank_), ShapeError,
                 where(*this, what), ": input overlaps output other than as chunk ", rank_,
                 " of it");
  // Moved as bytes: no arithmetic, so every dtype goes.
  run_blocking(what, output.bytes(), [&] {
    return ncclAllGather(input.raw(), output.raw(), input.bytes(), ncclUint8, comm_, stream_);
  });
}

void NcclCommunicator::broadcast(const TensorView& buffer, int root) {
  const bool meta = check_buffer(*this, "broadcast", buffer);
  detail::check_peer(*this, "broadcast", "root", root);
  if (meta || buffer.numel() == 0) return;
  run_blocking("broadcast", buffer.bytes(), [&] {
    return ncclBroadcast(buffer.raw(), buffer.raw(), buffer.bytes(), ncclUint8, root, comm_,
                         stream_);
  });
}

void NcclCommunicator::send(const TensorView& buffer, int peer, int /*tag*/) {
  const bool meta = check_buffer(*this, "send", buffer);
  detail::check_peer(*this, "send", "peer", peer);
  check_not_self(*this, "send", peer);
  if (meta || buffer.numel() == 0) return;
  run_blocking("send", buffer.bytes(), [&] {
    return ncclSend(buffer.raw(), buffer.bytes(), ncclUint8, peer, comm_, stream_);
  });
}

void NcclCommunicator::recv(const TensorView& buffer, int peer, int /*tag*/) {
  const bool meta = check_buffer(*this, "recv", buffer);
  detail::check_peer(*this, "recv", "peer", peer);
  check_not_self(*this, "recv", peer);
  if (meta || buffer.numel() == 0) return;
  run_blocking("recv", buffer.bytes(), [&] {
    return ncclRecv(buffer.raw(), buffer.bytes(), ncclUint8, peer, comm_, stream_);
  });
}

void NcclCommunicator::barrier() {
  if (!barrier_token_.defined())
    barrier_token_ = Tensor::zeros({1}, DType::kI32, Device{DeviceKind::kCuda, device_});
  all_reduce(barrier_token_);
  cuda::DeviceGuard guard(device_);
  watchdog_->drain();
}

std::unique_ptr<Communicator> NcclCommunicator::split(int color, int key, const std::string& name) {
  std::unique_ptr<Communicator> part = host_->split(color, key, name);
  if (part == nullptr) return nullptr;
  cuda::DeviceGuard guard(device_);
  return std::make_unique<NcclCommunicator>(std::move(part), name, timeout_s_);
}

std::unique_ptr<NcclCommunicator> make_nccl_communicator(Communicator& host,
                                                         const std::string& name,
                                                         double timeout_s) {
  std::unique_ptr<Communicator> copy = host.split(0, host.rank(), name);
  MEMENTO_CHECK(copy != nullptr && copy->size() == host.size(), "splitting '", host.name(),
                "' for the NCCL communicator '", name, "' lost ranks");
  return std::make_unique<NcclCommunicator>(std::move(copy), name, timeout_s);
}

}  // namespace memento::parallel
