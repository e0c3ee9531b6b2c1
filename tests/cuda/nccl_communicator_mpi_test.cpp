// The NCCL communicator under mpirun on 1 and 2 ranks (see tests/CMakeLists.txt), one GPU per
// rank: rank r of a node uses GPU (local rank % GPUs). With fewer GPUs than ranks on a node (NCCL
// refuses two ranks on one GPU) or no GPU at all, every test skips and says why. Inputs are derived
// from the rank so that every expected value is exact; on one rank the reductions are identities
// and the tests check NCCL's one-rank semantics and the stream ordering.
#include <gtest/gtest.h>
#include <mpi.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "core/cuda/check.h"
#include "core/error.h"
#include "core/tensor.h"
#include "parallel/data_parallel.h"
#include "parallel/mpi_communicator.h"
#include "parallel/nccl_communicator.h"

namespace memento::parallel {
namespace {

// The watchdog's deadline here: a hung collective fails the test in a minute, not ctest's 15.
constexpr double kTimeoutSeconds = 60;

// One NCCL communicator for the whole run (its setup costs far more than a test), made before the
// first test and destroyed after the last, while MPI and CUDA are still up.
struct NcclSetup {
  std::unique_ptr<Communicator> world;
  std::unique_ptr<NcclCommunicator> nccl;
  int device = 0;
  std::string skip_reason;  // empty when the tests run
};

NcclSetup& setup() {
  static NcclSetup s;
  return s;
}

Device gpu() { return {DeviceKind::kCuda, setup().device}; }

class NcclEnvironment final : public ::testing::Environment {
 public:
  void SetUp() override {
    NcclSetup& s = setup();
    s.world = make_world_communicator();
    MPI_Comm node = MPI_COMM_NULL;
    MPI_CHECK(MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, s.world->rank(),
                                  MPI_INFO_NULL, &node));
    int local_rank = 0;
    int local_size = 1;
    MPI_CHECK(MPI_Comm_rank(node, &local_rank));
    MPI_CHECK(MPI_Comm_size(node, &local_size));
    MPI_CHECK(MPI_Comm_free(&node));

    // Every rank must make the same choice, or the ones that run would wait for the others.
    const int gpus = cuda::cuda_device_count();
    int runs_here = gpus > 0 && local_size <= gpus ? 1 : 0;
    Tensor all_run = Tensor::empty({1}, DType::kI32);
    all_run.data<int32_t>()[0] = runs_here;
    s.world->all_reduce(all_run, ReduceOp::kMin);
    if (all_run.data<int32_t>()[0] == 0) {
      s.skip_reason = gpus == 0 ? "no CUDA device: the NCCL communicator needs a GPU per rank"
                      : !runs_here
                          ? ::memento::detail::concat(local_size, " ranks on this node but ", gpus,
                                                      " GPUs: NCCL refuses two ranks on one GPU "
                                                      "(\"Duplicate GPU detected\")")
                          : "another rank has fewer GPUs than ranks on its node";
      return;
    }
    s.device = local_rank % gpus;
    CUDA_CHECK(cudaSetDevice(s.device));
    s.nccl = make_nccl_communicator(*s.world, "world", kTimeoutSeconds);
  }
  void TearDown() override {
    setup().nccl.reset();
    setup().world.reset();
  }
};

[[maybe_unused]] const ::testing::Environment* const kEnvironment =
    ::testing::AddGlobalTestEnvironment(new NcclEnvironment);

class NcclTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!setup().skip_reason.empty()) GTEST_SKIP() << setup().skip_reason;
  }
  static NcclCommunicator& comm() { return *setup().nccl; }
  static int rank() { return setup().nccl->rank(); }
  static int size() { return setup().nccl->size(); }
};

// A tensor of `dtype` on this rank's GPU holding `values` (converted to dtype).
Tensor on_gpu(const std::vector<double>& values, DType dtype) {
  Tensor host = Tensor::empty({static_cast<int64_t>(values.size())}, DType::kF64);
  std::copy(values.begin(), values.end(), host.data<double>());
  Tensor t = Tensor::empty(host.shape(), dtype, gpu());
  copy(host, t);
  return t;
}

// What a GPU tensor holds, in fp64 (copy() reads on the compute stream, in its order).
std::vector<double> values_of(const TensorView& t) {
  Tensor host = Tensor::empty(t.shape(), DType::kF64);
  copy(t, host);
  return {host.data<double>(), host.data<double>() + host.numel()};
}

// Rank r holds ±(r + 1)·(i % 50 + 1) at element i, negated on odd ranks: small integers, exact in
// every dtype.
std::vector<double> rank_values(int rank, int64_t n) {
  std::vector<double> v(static_cast<size_t>(n));
  const double sign = rank % 2 ? -1.0 : 1.0;
  for (int64_t i = 0; i < n; ++i) v[i] = sign * (rank + 1) * static_cast<double>(i % 50 + 1);
  return v;
}

// Σ over ranks of ±(r + 1): the factor of rank_values' sum.
double sign_sum(int size) {
  double sum = 0;
  for (int r = 0; r < size; ++r) sum += (r % 2 ? -1.0 : 1.0) * (r + 1);
  return sum;
}

std::string error_of(const std::function<void()>& call) {
  try {
    call();
  } catch (const ShapeError& e) {
    return e.what();
  }
  return "(no error)";
}

TEST_F(NcclTest, IsBuiltOverTheWorldOnThisRanksGpu) {
  EXPECT_EQ(comm().name(), "world");
  EXPECT_EQ(comm().rank(), setup().world->rank());
  EXPECT_EQ(comm().size(), setup().world->size());
  EXPECT_EQ(comm().device(), setup().device);
  int nccl_rank = -1;
  int nccl_size = 0;
  NCCL_CHECK(ncclCommUserRank(comm().handle(), &nccl_rank));
  NCCL_CHECK(ncclCommCount(comm().handle(), &nccl_size));
  EXPECT_EQ(nccl_rank, rank());
  EXPECT_EQ(nccl_size, size());
}

TEST_F(NcclTest, AllReduceSumMaxMinOfEveryDtype) {
  constexpr int64_t n = 7;
  double max_factor = 1;
  double min_factor = 1;
  for (int r = 0; r < size(); ++r) {
    const double f = (r % 2 ? -1.0 : 1.0) * (r + 1);
    max_factor = std::max(max_factor, f);
    min_factor = std::min(min_factor, f);
  }
  const std::pair<ReduceOp, double> cases[] = {{ReduceOp::kSum, sign_sum(size())},
                                               {ReduceOp::kMax, max_factor},
                                               {ReduceOp::kMin, min_factor}};
  for (DType dtype :
       {DType::kF32, DType::kF64, DType::kBF16, DType::kF16, DType::kI32, DType::kI64}) {
    for (const auto& [op, factor] : cases) {
      Tensor t = on_gpu(rank_values(rank(), n), dtype);
      comm().all_reduce(t, op);
      const std::vector<double> got = values_of(t);
      for (int64_t i = 0; i < n; ++i) {
        EXPECT_EQ(got[i], factor * static_cast<double>(i + 1))
            << dtype_name(dtype) << " op " << static_cast<int>(op) << " element " << i;
      }
    }
  }
}

TEST_F(NcclTest, AsyncAllReduceCompletesThroughTestAndWait) {
  constexpr int64_t n = int64_t{1} << 20;
  Tensor polled = on_gpu(rank_values(rank(), n), DType::kF32);
  Tensor waited = on_gpu(rank_values(rank(), n), DType::kF32);
  Tensor dropped = on_gpu(rank_values(rank(), n), DType::kF32);
  std::unique_ptr<Work> poll = comm().all_reduce_async(polled);
  while (!poll->test()) {
  }
  poll->wait();  // returns at once after test() said done
  std::unique_ptr<Work> wait = comm().all_reduce_async(waited);
  wait->wait();
  wait->wait();  // a second wait is harmless
  // Dropped unwaited: the Work's destructor orders the compute stream after the all-reduce.
  comm().all_reduce_async(dropped).reset();
  const double f = sign_sum(size());
  for (const Tensor* t : {&polled, &waited, &dropped}) {
    const std::vector<double> got = values_of(*t);
    for (int64_t i = 0; i < n; ++i) {
      ASSERT_EQ(got[i], f * static_cast<double>(i % 50 + 1)) << i;
    }
  }
}

// Work queued on the compute stream before a collective must be done before the collective reads
// its input, and a read queued after it must see its output. A long run of memsets holds the
// compute stream busy, so that a collective not ordered after it would copy the stale input, and
// a read not ordered after the collective would find the output unwritten.
TEST_F(NcclTest, CollectivesRunAfterQueuedComputeWorkAndBeforeLaterWork) {
  constexpr int64_t n = int64_t{1} << 26;  // 256 MiB of f32 per rank
  constexpr int64_t kDelayElements = int64_t{1} << 27;
  constexpr int kDelayPasses = 8;
  constexpr int kPattern = 0x3f;  // every byte: the float 0.7470...
  const cudaStream_t compute = cudaStreamLegacy;
  Tensor input = Tensor::empty({n}, DType::kF32, gpu());
  Tensor output = Tensor::empty({size() * n}, DType::kF32, gpu());
  Tensor delay = Tensor::empty({kDelayElements}, DType::kF32, gpu());
  CUDA_CHECK(cudaMemsetAsync(output.view().raw(), 0, output.bytes(), compute));
  CUDA_CHECK(cudaMemsetAsync(input.view().raw(), 0, input.bytes(), compute));
  for (int pass = 0; pass < kDelayPasses; ++pass)
    CUDA_CHECK(cudaMemsetAsync(delay.view().raw(), pass, delay.bytes(), compute));
  CUDA_CHECK(cudaMemsetAsync(input.view().raw(), kPattern, input.bytes(), compute));
  comm().all_gather(input, output);

  float pattern = 0;
  std::memset(&pattern, kPattern, sizeof(pattern));
  const float* out = output.data<float>();
  for (int r = size() - 1; r >= 0; --r) {
    for (int64_t i : {r * n + n - 1, r * n + n / 2, r * n}) {
      float got = 0;
      CUDA_CHECK(cudaMemcpy(&got, out + i, sizeof(got), cudaMemcpyDeviceToHost));
      EXPECT_EQ(got, pattern) << "chunk " << r << " element " << i - r * n;
    }
  }
}

TEST_F(NcclTest, ReduceScatterGivesRankItsReducedChunk) {
  constexpr int64_t n = 3;
  const int64_t total = size() * n;
  // Rank r holds 100·r + j at element j of the input.
  std::vector<double> input_values(static_cast<size_t>(total));
  for (int64_t j = 0; j < total; ++j) input_values[j] = 100.0 * rank() + static_cast<double>(j);
  const double rank_sum = 100.0 * size() * (size() - 1) / 2;

  Tensor input = on_gpu(input_values, DType::kF64);
  Tensor output = on_gpu(std::vector<double>(n, -1.0), DType::kF64);
  comm().reduce_scatter(input, output);
  std::vector<double> got = values_of(output);
  for (int64_t i = 0; i < n; ++i)
    EXPECT_EQ(got[i], rank_sum + size() * static_cast<double>(rank() * n + i)) << i;

  comm().reduce_scatter(input, output, ReduceOp::kMax);
  got = values_of(output);
  for (int64_t i = 0; i < n; ++i)
    EXPECT_EQ(got[i], 100.0 * (size() - 1) + static_cast<double>(rank() * n + i)) << i;

  // In place: the output is this rank's chunk of the input; the other chunks are left alone.
  comm().reduce_scatter(input, input.view().flat_range(rank() * n, {n}));
  got = values_of(input);
  for (int64_t j = 0; j < total; ++j) {
    const bool mine = j / n == rank();
    EXPECT_EQ(got[j], mine ? rank_sum + size() * static_cast<double>(j) : input_values[j]) << j;
  }
}

TEST_F(NcclTest, AllGatherPutsChunkRFromRankR) {
  constexpr int64_t n = 4;
  std::vector<double> mine(n);
  for (int64_t i = 0; i < n; ++i) mine[i] = 10.0 * rank() + static_cast<double>(i);
  Tensor input = on_gpu(mine, DType::kI64);
  Tensor output = on_gpu(std::vector<double>(size() * n, -1.0), DType::kI64);
  comm().all_gather(input, output);
  std::vector<double> got = values_of(output);
  for (int64_t j = 0; j < size() * n; ++j)
    EXPECT_EQ(got[j], 10.0 * static_cast<double>(j / n) + static_cast<double>(j % n)) << j;

  // In place, in bf16: input is chunk rank() of output; the other chunks start as -1.
  std::vector<double> gathered_values(size() * n, -1.0);
  std::copy(mine.begin(), mine.end(), gathered_values.begin() + rank() * n);
  Tensor gathered = on_gpu(gathered_values, DType::kBF16);
  comm().all_gather(gathered.view().flat_range(rank() * n, {n}), gathered);
  got = values_of(gathered);
  for (int64_t j = 0; j < size() * n; ++j)
    EXPECT_EQ(got[j], 10.0 * static_cast<double>(j / n) + static_cast<double>(j % n)) << j;
}

TEST_F(NcclTest, BroadcastFromEveryRootInAnyDtype) {
  constexpr int64_t n = 5;
  for (DType dtype : {DType::kI32, DType::kU16, DType::kBF16}) {
    for (int root = 0; root < size(); ++root) {
      std::vector<double> v(n);
      for (int64_t i = 0; i < n; ++i) v[i] = 100.0 * rank() + static_cast<double>(i);
      Tensor t = on_gpu(v, dtype);
      comm().broadcast(t, root);
      const std::vector<double> got = values_of(t);
      for (int64_t i = 0; i < n; ++i)
        EXPECT_EQ(got[i], 100.0 * root + static_cast<double>(i)) << dtype_name(dtype) << root;
    }
  }
}

TEST_F(NcclTest, SendRecvAroundARing) {
  constexpr int64_t n = 6;
  Tensor out = on_gpu(rank_values(rank(), n), DType::kF32);
  if (size() == 1) {
    // One rank has no one to send to, and NCCL cannot send to itself outside a group.
    EXPECT_EQ(error_of([&] { comm().send(out, 0); }),
              "send on 'world' (1 rank): peer 0 is this rank; NCCL cannot send to itself outside a "
              "group");
    return;
  }
  const int next = (rank() + 1) % size();
  const int prev = (rank() + size() - 1) % size();
  Tensor in = on_gpu(std::vector<double>(n, 0.0), DType::kF32);
  // Even ranks send first and odd ranks receive first, so no rank waits on a blocked peer.
  if (rank() % 2 == 0) {
    comm().send(out, next);
    comm().recv(in, prev);
  } else {
    comm().recv(in, prev);
    comm().send(out, next);
  }
  const std::vector<double> got = values_of(in);
  const std::vector<double> expected = rank_values(prev, n);
  for (int64_t i = 0; i < n; ++i) EXPECT_EQ(got[i], expected[i]) << i;
}

TEST_F(NcclTest, BarrierWaitsForTheQueuedCollectives) {
  Tensor big = on_gpu(rank_values(rank(), int64_t{1} << 24), DType::kF32);
  std::unique_ptr<Work> work = comm().all_reduce_async(big);
  comm().barrier();
  EXPECT_EQ(cudaStreamQuery(comm().stream()), cudaSuccess);
  EXPECT_TRUE(work->test());
  work->wait();
}

// The data-parallel path of the trainer: bucketed async all-reduces started during backward over
// a device gradient buffer, waited for by finish(), two steps in a row.
TEST_F(NcclTest, GradientReducerSumsDeviceGradientsOverRanks) {
  constexpr int64_t n = 1000;
  constexpr int64_t kBucket = 128;
  Tensor grads = Tensor::empty({n}, DType::kF32, gpu());
  GradientReducer reducer(grads, comm(), kBucket);
  ASSERT_EQ(reducer.buckets().size(), 8u);
  for (int step = 1; step <= 2; ++step) {
    std::vector<double> mine = rank_values(rank(), n);
    for (double& v : mine) v *= step;
    copy(on_gpu(mine, DType::kF32), grads);
    reducer.grads_final({700, n});  // the buckets of the last layers first, as backward goes
    reducer.grads_final({300, 700});
    reducer.finish();
    const std::vector<double> got = values_of(grads);
    for (int64_t i = 0; i < n; ++i) {
      ASSERT_EQ(got[i], sign_sum(size()) * step * static_cast<double>(i % 50 + 1))
          << "step " << step << " element " << i;
    }
  }
}

TEST_F(NcclTest, SplitBuildsAnNcclCommunicatorOverThePart) {
  // One part holding every rank, keys reversed so that the new ranks count down.
  std::unique_ptr<Communicator> reversed = comm().split(0, size() - rank(), "reversed");
  ASSERT_NE(reversed, nullptr);
  auto* nccl = dynamic_cast<NcclCommunicator*>(reversed.get());
  ASSERT_NE(nccl, nullptr);
  EXPECT_EQ(nccl->name(), "reversed");
  EXPECT_EQ(nccl->size(), size());
  EXPECT_EQ(nccl->rank(), size() - 1 - rank());
  EXPECT_EQ(nccl->device(), setup().device);

  Tensor from_first = on_gpu({static_cast<double>(rank())}, DType::kI32);
  nccl->broadcast(from_first, 0);  // new rank 0 is the last world rank
  EXPECT_EQ(values_of(from_first)[0], size() - 1);
  Tensor sum = on_gpu({static_cast<double>(rank())}, DType::kI32);
  nccl->all_reduce(sum);
  EXPECT_EQ(values_of(sum)[0], size() * (size() - 1) / 2);
  nccl->barrier();
}

TEST_F(NcclTest, BadCallsThrowShapeErrorsNamingTheTensor) {
  const std::string where =
      "' (" + std::to_string(size()) + (size() == 1 ? " rank): " : " ranks): ");
  const std::string gpu_name = device_name(gpu());
  Tensor cpu = Tensor::empty({4}, DType::kF32);
  EXPECT_EQ(error_of([&] { comm().all_reduce(cpu); }),
            "all_reduce on 'world" + where + "tensor [4] is on cpu; this NCCL communicator takes " +
                "tensors on " + gpu_name);
  EXPECT_EQ(error_of([&] { comm().all_reduce_async(cpu); }),
            "all_reduce_async on 'world" + where + "tensor [4] is on cpu; this NCCL communicator " +
                "takes tensors on " + gpu_name);
  Tensor u16 = Tensor::empty({2, 3}, DType::kU16, gpu());
  EXPECT_EQ(error_of([&] { comm().all_reduce(u16); }),
            "all_reduce on 'world" + where +
                "tensor [2, 3] is u16; NCCL reductions take f32, f64, bf16, f16, i32 or i64");
  Tensor f32_10 = Tensor::empty({10}, DType::kF32, gpu());
  Tensor f32_3 = Tensor::empty({3}, DType::kF32, gpu());
  EXPECT_EQ(error_of([&] { comm().reduce_scatter(f32_10, f32_3); }),
            "reduce_scatter on 'world" + where + "input [10] must hold " + std::to_string(size()) +
                " × output [3] = " + std::to_string(3 * size()) + " elements, not 10");
  Tensor f64_gathered = Tensor::empty({3 * size()}, DType::kF64, gpu());
  EXPECT_EQ(error_of([&] { comm().all_gather(f32_3, f64_gathered); }),
            "all_gather on 'world" + where + "input is f32 but output is f64");
  Tensor cpu_gathered = Tensor::empty({3 * size()}, DType::kF32);
  EXPECT_EQ(error_of([&] { comm().all_gather(f32_3, cpu_gathered); }),
            "all_gather on 'world" + where + "tensor [" + std::to_string(3 * size()) +
                "] is on cpu; this NCCL communicator takes tensors on " + gpu_name);
  EXPECT_EQ(error_of([&] { comm().broadcast(f32_3, size()); }),
            "broadcast on 'world" + where + "root " + std::to_string(size()) +
                " is not a rank of the communicator");
  EXPECT_EQ(error_of([&] { comm().recv(f32_3, rank()); }),
            "recv on 'world" + where + "peer " + std::to_string(rank()) +
                " is this rank; NCCL cannot send to itself outside a group");
  if (size() == 1) return;
  // Input inside the output but not at chunk rank().
  Tensor gathered = Tensor::empty({3 * size()}, DType::kF32, gpu());
  const int64_t wrong_chunk = (rank() + 1) % size();
  EXPECT_EQ(error_of([&] {
              comm().all_gather(gathered.view().flat_range(wrong_chunk * 3, {3}), gathered);
            }),
            "all_gather on 'world" + where + "input overlaps output other than as chunk " +
                std::to_string(rank()) + " of it");
}

TEST_F(NcclTest, MetaTensorsAreNoOpsAfterTheShapeChecks) {
  const Device meta = Device::meta();
  Tensor a = Tensor::empty({4, 8}, DType::kF32, meta);
  comm().all_reduce(a);
  comm().all_reduce_async(a)->wait();
  comm().broadcast(a, 0);
  Tensor gathered = Tensor::empty({size() * 32}, DType::kF32, meta);
  comm().all_gather(a, gathered);
  comm().reduce_scatter(gathered, a);
  Tensor wrong = Tensor::empty({size() * 32 + 1}, DType::kF32, meta);
  EXPECT_THROW(comm().all_gather(a, wrong), ShapeError);
  EXPECT_THROW(comm().all_reduce(Tensor::empty({2}, DType::kU16, meta)), ShapeError);
}

}  // namespace
}  // namespace memento::parallel
