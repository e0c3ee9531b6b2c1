// The MPI communicator on 2 and 4 ranks (mpirun, see tests/CMakeLists.txt). Inputs are derived
// from the rank so that every expected value is exact.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "core/error.h"
#include "core/tensor.h"
#include "parallel/mpi_communicator.h"

namespace memento::parallel {
namespace {

class CommunicatorTest : public ::testing::Test {
 protected:
  void SetUp() override { world_ = make_world_communicator(); }
  int rank() const { return world_->rank(); }
  int size() const { return world_->size(); }
  std::unique_ptr<Communicator> world_;
};

template <typename T>
class AllReduceTest : public CommunicatorTest {};
using Dtypes = ::testing::Types<float, double, int32_t, int64_t>;
TYPED_TEST_SUITE(AllReduceTest, Dtypes);

// Rank r holds (r + 1)·(i + 1) at element i, negated on odd ranks.
template <typename T>
Tensor rank_values(int rank, int64_t n) {
  Tensor t = Tensor::empty({n}, DTypeOf<T>::value);
  const int64_t sign = rank % 2 ? -1 : 1;
  for (int64_t i = 0; i < n; ++i) t.data<T>()[i] = static_cast<T>(sign * (rank + 1) * (i + 1));
  return t;
}

TYPED_TEST(AllReduceTest, SumMaxMinOfEveryDtype) {
  using T = TypeParam;
  constexpr int64_t n = 7;
  const int size = this->size();
  int64_t sign_sum = 0;  // sum over ranks of ±(r + 1)
  int64_t max_factor = 1;
  int64_t min_factor = 1;
  for (int r = 0; r < size; ++r) {
    const int64_t f = (r % 2 ? -1 : 1) * (r + 1);
    sign_sum += f;
    max_factor = std::max(max_factor, f);
    min_factor = std::min(min_factor, f);
  }
  const std::pair<ReduceOp, int64_t> cases[] = {
      {ReduceOp::kSum, sign_sum}, {ReduceOp::kMax, max_factor}, {ReduceOp::kMin, min_factor}};
  for (const auto& [op, factor] : cases) {
    Tensor t = rank_values<T>(this->rank(), n);
    this->world_->all_reduce(t, op);
    for (int64_t i = 0; i < n; ++i) {
      EXPECT_EQ(t.data<T>()[i], static_cast<T>(factor * (i + 1)))
          << "op " << static_cast<int>(op) << " element " << i;
    }
  }
}

TYPED_TEST(AllReduceTest, AsyncSumCompletesThroughTestAndWait) {
  using T = TypeParam;
  constexpr int64_t n = 1000;
  const int size = this->size();
  int64_t sign_sum = 0;
  for (int r = 0; r < size; ++r) sign_sum += (r % 2 ? -1 : 1) * (r + 1);

  Tensor polled = rank_values<T>(this->rank(), n);
  std::unique_ptr<Work> work = this->world_->all_reduce_async(polled);
  while (!work->test()) {
  }
  work->wait();  // returns at once after test() said done
  Tensor waited = rank_values<T>(this->rank(), n);
  this->world_->all_reduce_async(waited, ReduceOp::kSum)->wait();
  for (int64_t i = 0; i < n; ++i) {
    ASSERT_EQ(polled.data<T>()[i], static_cast<T>(sign_sum * (i + 1))) << i;
    ASSERT_EQ(waited.data<T>()[i], static_cast<T>(sign_sum * (i + 1))) << i;
  }
}

TEST_F(CommunicatorTest, ReduceScatterGivesRankItsReducedChunk) {
  constexpr int64_t n = 3;
  const int64_t total = size() * n;
  // Rank r holds 100·r + j at element j of the input.
  auto input_of = [&](int r) {
    Tensor t = Tensor::empty({total}, DType::kF64);
    for (int64_t j = 0; j < total; ++j) t.data<double>()[j] = 100.0 * r + static_cast<double>(j);
    return t;
  };
  const double rank_sum = 100.0 * size() * (size() - 1) / 2;

  Tensor input = input_of(rank());
  Tensor output = Tensor::empty({n}, DType::kF64);
  world_->reduce_scatter(input, output);
  for (int64_t i = 0; i < n; ++i) {
    EXPECT_EQ(output.data<double>()[i], rank_sum + size() * static_cast<double>(rank() * n + i));
  }

  world_->reduce_scatter(input, output, ReduceOp::kMax);
  for (int64_t i = 0; i < n; ++i) {
    EXPECT_EQ(output.data<double>()[i], 100.0 * (size() - 1) + static_cast<double>(rank() * n + i));
  }

  // In place: the output is this rank's chunk of the input; the other chunks are left alone.
  TensorView own = input.view().flat_range(rank() * n, {n});
  world_->reduce_scatter(input, own);
  for (int64_t j = 0; j < total; ++j) {
    const bool mine = j / n == rank();
    const double expected =
        mine ? rank_sum + size() * static_cast<double>(j) : 100.0 * rank() + static_cast<double>(j);
    EXPECT_EQ(input.data<double>()[j], expected) << j;
  }
}

TEST_F(CommunicatorTest, AllGatherPutsChunkRFromRankR) {
  constexpr int64_t n = 4;
  Tensor input = Tensor::empty({n}, DType::kI64);
  for (int64_t i = 0; i < n; ++i) input.data<int64_t>()[i] = 10 * rank() + i;
  Tensor output = Tensor::empty({size(), n}, DType::kI64);
  world_->all_gather(input, output);
  for (int r = 0; r < size(); ++r) {
    for (int64_t i = 0; i < n; ++i) EXPECT_EQ(output.data<int64_t>()[r * n + i], 10 * r + i);
  }

  // In place: input is chunk rank() of output; the other chunks start as garbage.
  Tensor gathered = Tensor::empty({size() * n}, DType::kF32);
  for (int64_t j = 0; j < size() * n; ++j) gathered.data<float>()[j] = -1.0f;
  TensorView own = gathered.view().flat_range(rank() * n, {n});
  for (int64_t i = 0; i < n; ++i) own.data<float>()[i] = static_cast<float>(10 * rank() + i);
  world_->all_gather(own, gathered);
  for (int64_t j = 0; j < size() * n; ++j) {
    EXPECT_EQ(gathered.data<float>()[j], static_cast<float>(10 * (j / n) + j % n)) << j;
  }
}

TEST_F(CommunicatorTest, BroadcastFromEveryRoot) {
  constexpr int64_t n = 5;
  for (int root = 0; root < size(); ++root) {
    Tensor t = Tensor::empty({n}, DType::kI32);
    for (int64_t i = 0; i < n; ++i) t.data<int32_t>()[i] = static_cast<int32_t>(1000 * rank() + i);
    world_->broadcast(t, root);
    for (int64_t i = 0; i < n; ++i) EXPECT_EQ(t.data<int32_t>()[i], 1000 * root + i) << root;
  }
}

TEST_F(CommunicatorTest, SendRecvAroundARing) {
  constexpr int64_t n = 6;
  constexpr int kTag = 7;
  const int next = (rank() + 1) % size();
  const int prev = (rank() + size() - 1) % size();
  Tensor out = Tensor::empty({n}, DType::kF32);
  for (int64_t i = 0; i < n; ++i) out.data<float>()[i] = static_cast<float>(rank() * n + i);
  Tensor in = Tensor::zeros({n}, DType::kF32);
  // Even ranks send first and odd ranks receive first, so no rank waits on a blocked peer.
  if (rank() % 2 == 0) {
    world_->send(out, next, kTag);
    world_->recv(in, prev, kTag);
  } else {
    world_->recv(in, prev, kTag);
    world_->send(out, next, kTag);
  }
  for (int64_t i = 0; i < n; ++i) EXPECT_EQ(in.data<float>()[i], static_cast<float>(prev * n + i));
}

// 2 × size/2 ranks when size is 4 or more and even, else 1 × size: rows hold consecutive ranks.
TEST_F(CommunicatorTest, SplitIntoRowsAndColumnsOfAGrid) {
  const int rows = size() >= 4 && size() % 2 == 0 ? 2 : 1;
  const int cols = size() / rows;
  const int row = rank() / cols;
  const int col = rank() % cols;
  std::unique_ptr<Communicator> row_comm = world_->split(row, col, "row");
  std::unique_ptr<Communicator> col_comm = world_->split(col, row, "col");
  ASSERT_NE(row_comm, nullptr);
  ASSERT_NE(col_comm, nullptr);
  EXPECT_EQ(row_comm->name(), "row");
  EXPECT_EQ(row_comm->size(), cols);
  EXPECT_EQ(row_comm->rank(), col);
  EXPECT_EQ(col_comm->size(), rows);
  EXPECT_EQ(col_comm->rank(), row);

  Tensor sum = Tensor::empty({1}, DType::kI32);
  sum.data<int32_t>()[0] = rank();
  row_comm->all_reduce(sum);
  EXPECT_EQ(sum.data<int32_t>()[0], row * cols * cols + cols * (cols - 1) / 2);

  Tensor me = Tensor::empty({1}, DType::kI32);
  me.data<int32_t>()[0] = rank();
  Tensor members = Tensor::empty({rows}, DType::kI32);
  col_comm->all_gather(me, members);
  for (int r = 0; r < rows; ++r) EXPECT_EQ(members.data<int32_t>()[r], r * cols + col);

  Tensor from_first = Tensor::empty({1}, DType::kI32);
  from_first.data<int32_t>()[0] = rank();
  row_comm->broadcast(from_first, 0);
  EXPECT_EQ(from_first.data<int32_t>()[0], row * cols);
  row_comm->barrier();
}

TEST_F(CommunicatorTest, SplitWithUndefinedColorGivesNoCommunicator) {
  // Only even ranks join; keys reversed so that the new ranks count down.
  const bool joins = rank() % 2 == 0;
  std::unique_ptr<Communicator> evens =
      world_->split(joins ? 0 : MPI_UNDEFINED, size() - rank(), "evens");
  if (!joins) {
    EXPECT_EQ(evens, nullptr);
    return;
  }
  ASSERT_NE(evens, nullptr);
  const int num_evens = (size() + 1) / 2;
  EXPECT_EQ(evens->size(), num_evens);
  EXPECT_EQ(evens->rank(), num_evens - 1 - rank() / 2);
}

std::string error_of(const std::function<void()>& call) {
  try {
    call();
  } catch (const ShapeError& e) {
    return e.what();
  }
  return "(no error)";
}

TEST_F(CommunicatorTest, BadCallsThrowShapeErrorsNamingOpCommunicatorAndShapes) {
  const std::string where =
      "' (" + std::to_string(size()) + (size() == 1 ? " rank): " : " ranks): ");
  Tensor f32_10 = Tensor::empty({10}, DType::kF32);
  Tensor f32_3 = Tensor::empty({3}, DType::kF32);
  EXPECT_EQ(error_of([&] { world_->reduce_scatter(f32_10, f32_3); }),
            "reduce_scatter on 'world" + where + "input [10] must hold " + std::to_string(size()) +
                " × output [3] = " + std::to_string(3 * size()) + " elements, not 10");
  EXPECT_EQ(error_of([&] { world_->all_gather(f32_3, f32_10); }),
            "all_gather on 'world" + where + "output [10] must hold " + std::to_string(size()) +
                " × input [3] = " + std::to_string(3 * size()) + " elements, not 10");
  Tensor bf16 = Tensor::empty({2, 4}, DType::kBF16);
  EXPECT_EQ(error_of([&] { world_->all_reduce(bf16); }),
            "all_reduce on 'world" + where +
                "tensor [2, 4] is bf16; collectives take f32, f64, "
                "i32 or i64");
  Tensor f64_gathered = Tensor::empty({3 * size()}, DType::kF64);
  EXPECT_EQ(error_of([&] { world_->all_gather(f32_3, f64_gathered); }),
            "all_gather on 'world" + where + "input is f32 but output is f64");
  EXPECT_EQ(error_of([&] { world_->broadcast(f32_3, size()); }),
            "broadcast on 'world" + where + "root " + std::to_string(size()) +
                " is not a rank of the communicator");
  EXPECT_EQ(error_of([&] { world_->send(f32_3, -1); }),
            "send on 'world" + where + "peer -1 is not a rank of the communicator");
  if (size() == 1) return;
  // Input inside the output but not at chunk rank().
  Tensor gathered = Tensor::empty({3 * size()}, DType::kF32);
  const int64_t wrong_chunk = (rank() + 1) % size();
  EXPECT_EQ(error_of([&] {
              world_->all_gather(gathered.view().flat_range(wrong_chunk * 3, {3}), gathered);
            }),
            "all_gather on 'world" + where + "input overlaps output other than as chunk " +
                std::to_string(rank()) + " of it");
}

TEST_F(CommunicatorTest, MetaTensorsAreNoOpsAfterTheShapeChecks) {
  const Device meta = Device::meta();
  Tensor a = Tensor::empty({4, 8}, DType::kF32, meta);
  world_->all_reduce(a);
  world_->all_reduce_async(a)->wait();
  world_->broadcast(a, 0);
  Tensor gathered = Tensor::empty({size() * 32}, DType::kF32, meta);
  world_->all_gather(a, gathered);
  world_->reduce_scatter(gathered, a);
  Tensor wrong = Tensor::empty({size() * 32 + 1}, DType::kF32, meta);
  EXPECT_THROW(world_->all_gather(a, wrong), ShapeError);
}

TEST_F(CommunicatorTest, WorldIsMpiCommWorld) {
  EXPECT_EQ(world_->name(), "world");
  int mpi_rank = -1;
  int mpi_size = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &mpi_rank);
  MPI_Comm_size(MPI_COMM_WORLD, &mpi_size);
  EXPECT_EQ(rank(), mpi_rank);
  EXPECT_EQ(size(), mpi_size);
  EXPECT_TRUE(MpiSession::launched_under_mpi());
  auto* mpi = dynamic_cast<MpiCommunicator*>(world_.get());
  ASSERT_NE(mpi, nullptr);
  EXPECT_EQ(mpi->handle(), MPI_COMM_WORLD);
}

}  // namespace
}  // namespace memento::parallel
