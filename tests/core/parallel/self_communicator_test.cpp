// The single-rank communicator: every collective is the identity, with the MPI backend's checks.
#include "core/parallel/self_communicator.h"

#include <gtest/gtest.h>

#include "core/error.h"
#include "core/tensor.h"

namespace memento::parallel {
namespace {

Tensor iota(int64_t n, DType dtype = DType::kF32) {
  Tensor t = Tensor::empty({n}, DType::kF64);
  for (int64_t i = 0; i < n; ++i) t.data<double>()[i] = static_cast<double>(i + 1);
  Tensor out = Tensor::empty({n}, dtype);
  copy(t, out);
  return out;
}

TEST(SelfCommunicator, CollectivesAreTheIdentity) {
  SelfCommunicator self("world");
  EXPECT_EQ(self.rank(), 0);
  EXPECT_EQ(self.size(), 1);
  Tensor t = iota(4);
  for (ReduceOp op : {ReduceOp::kSum, ReduceOp::kMax, ReduceOp::kMin}) self.all_reduce(t, op);
  EXPECT_TRUE(self.all_reduce_async(t)->test());
  self.broadcast(t, 0);
  self.barrier();
  for (int i = 0; i < 4; ++i) EXPECT_EQ(t.data<float>()[i], static_cast<float>(i + 1));

  Tensor out = Tensor::zeros({4}, DType::kF32);
  self.all_gather(t, out);
  for (int i = 0; i < 4; ++i) EXPECT_EQ(out.data<float>()[i], static_cast<float>(i + 1));
  Tensor scattered = Tensor::zeros({4}, DType::kF32);
  self.reduce_scatter(t, scattered);
  for (int i = 0; i < 4; ++i) EXPECT_EQ(scattered.data<float>()[i], static_cast<float>(i + 1));
  self.all_gather(t, t);  // in place
  self.reduce_scatter(t, t);
  for (int i = 0; i < 4; ++i) EXPECT_EQ(t.data<float>()[i], static_cast<float>(i + 1));
}

TEST(SelfCommunicator, SendToSelfIsReceivedByTag) {
  SelfCommunicator self;
  self.send(iota(3, DType::kI64), 0, /*tag=*/1);
  self.send(iota(2, DType::kI64), 0, /*tag=*/2);
  Tensor two = Tensor::zeros({2}, DType::kI64);
  self.recv(two, 0, 2);
  EXPECT_EQ(two.data<int64_t>()[1], 2);
  Tensor three = Tensor::zeros({3}, DType::kI64);
  self.recv(three, 0, 1);
  EXPECT_EQ(three.data<int64_t>()[2], 3);
}

TEST(SelfCommunicator, SplitGivesANamedSingleRank) {
  SelfCommunicator self;
  std::unique_ptr<Communicator> dp = self.split(0, 0, "dp");
  ASSERT_NE(dp, nullptr);
  EXPECT_EQ(dp->name(), "dp");
  EXPECT_EQ(dp->size(), 1);
}

TEST(SelfCommunicator, ChecksMatchTheMpiBackend) {
  SelfCommunicator self("dp");
  Tensor bf16 = Tensor::empty({3}, DType::kBF16);
  try {
    self.all_reduce(bf16);
    ADD_FAILURE() << "bf16 all_reduce did not throw";
  } catch (const ShapeError& e) {
    EXPECT_STREQ(e.what(),
                 "all_reduce on 'dp' (1 rank): tensor [3] is bf16; collectives take f32, f64, i32 "
                 "or i64");
  }
  EXPECT_THROW(self.all_gather(iota(3), iota(4)), ShapeError);
  EXPECT_THROW(self.reduce_scatter(iota(4), iota(3)), ShapeError);
  EXPECT_THROW(self.broadcast(iota(3), 1), ShapeError);
  EXPECT_THROW(self.send(iota(3), 1), ShapeError);
}

}  // namespace
}  // namespace memento::parallel
