// The data-parallel gradient reducer on 2 and 4 ranks (mpirun, see tests/CMakeLists.txt), over the
// MPI communicator. Each rank's gradients are derived from its rank, so every sum is exact. The
// reducer runs on a communicator that records every all_reduce_async it is asked for (which
// range, and the bucket's bytes at that moment) and passes it on to MPI: so the tests see when each
// bucket started and what it sent, not only the sums that came back.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <memory>
#include <numeric>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "core/tensor.h"
#include "parallel/data_parallel.h"
#include "parallel/mpi_communicator.h"

namespace memento::parallel {
namespace {

// Passes every call to `inner`; records each all_reduce_async: its range of `flat` and the values
// it was started on.
class RecordingCommunicator final : public Communicator {
 public:
  struct Call {
    FlatRange range;
    std::vector<float> sent;  // the bucket's values when the all-reduce started
  };

  RecordingCommunicator(Communicator& inner, const TensorView& flat) : inner_(inner), flat_(flat) {}

  const std::vector<Call>& calls() const { return calls_; }
  void clear() { calls_.clear(); }

  int rank() const override { return inner_.rank(); }
  int size() const override { return inner_.size(); }
  std::string name() const override { return inner_.name(); }
  void all_reduce(const TensorView& buffer, ReduceOp op) override { inner_.all_reduce(buffer, op); }
  std::unique_ptr<Work> all_reduce_async(const TensorView& buffer, ReduceOp op) override {
    const float* begin = buffer.data<float>();
    const int64_t offset = begin - flat_.data<float>();
    EXPECT_TRUE(offset >= 0 && offset + buffer.numel() <= flat_.numel())
        << "an all-reduce outside the gradient buffer";
    calls_.push_back({{offset, offset + buffer.numel()}, {begin, begin + buffer.numel()}});
    return inner_.all_reduce_async(buffer, op);
  }
  void reduce_scatter(const TensorView& input, const TensorView& output, ReduceOp op) override {
    inner_.reduce_scatter(input, output, op);
  }
  void all_gather(const TensorView& input, const TensorView& output) override {
    inner_.all_gather(input, output);
  }
  void broadcast(const TensorView& buffer, int root) override { inner_.broadcast(buffer, root); }
  void send(const TensorView& buffer, int peer, int tag) override {
    inner_.send(buffer, peer, tag);
  }
  void recv(const TensorView& buffer, int peer, int tag) override {
    inner_.recv(buffer, peer, tag);
  }
  void barrier() override { inner_.barrier(); }
  std::unique_ptr<Communicator> split(int color, int key, const std::string& name) override {
    return inner_.split(color, key, name);
  }

 private:
  Communicator& inner_;
  TensorView flat_;
  std::vector<Call> calls_;
};

constexpr int64_t kN = 1000;     // gradient elements
constexpr int64_t kBucket = 96;  // divides neither kN nor any piece below: buckets straddle ranges

// Rank r's gradient of element i in step s: small integers, so the sum over ranks is exact.
float local_value(int rank, int step, int64_t i) {
  return static_cast<float>((rank + 1) * ((i + 7 * step) % 101 + 1));
}
float summed_value(int size, int step, int64_t i) {
  return static_cast<float>(size * (size + 1) / 2 * ((i + 7 * step) % 101 + 1));
}

// The buckets the header promises: kBucket elements each from the end of the buffer, the last one
// clipped at 0.
std::vector<FlatRange> expected_buckets(int64_t n, int64_t bucket) {
  std::vector<FlatRange> buckets;
  for (int64_t end = n; end > 0; end -= bucket)
    buckets.push_back({std::max<int64_t>(0, end - bucket), end});
  return buckets;
}

class GradientReducerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    world_ = make_world_communicator();
    grads_ = Tensor::empty(Shape{kN}, DType::kF32);
    recorder_ = std::make_unique<RecordingCommunicator>(*world_, grads_.view());
    reducer_ = std::make_unique<GradientReducer>(grads_.view(), *recorder_, kBucket);
    buckets_ = expected_buckets(kN, kBucket);
  }
  int rank() const { return world_->rank(); }
  int size() const { return world_->size(); }
  float* grads() const { return grads_.data<float>(); }

  // Before backward writes them, the gradients hold a poison that would show in any sum.
  void poison() { std::fill(grads(), grads() + kN, std::nanf("")); }
  void write(FlatRange r, int step) {
    for (int64_t i = r.begin; i < r.end; ++i) grads()[i] = local_value(rank(), step, i);
  }

  // The buckets that must have started once the elements marked in `final` are final: the
  // longest run of whole buckets, in bucket order.
  size_t expected_started(const std::vector<bool>& final) const {
    size_t started = 0;
    while (started < buckets_.size() &&
           std::all_of(final.begin() + buckets_[started].begin,
                       final.begin() + buckets_[started].end, [](bool f) { return f; }))
      ++started;
    return started;
  }

  void expect_calls_are_buckets(size_t count, const std::string& when) const {
    const auto& calls = recorder_->calls();
    ASSERT_EQ(calls.size(), count) << when;
    for (size_t b = 0; b < count; ++b) {
      EXPECT_EQ(calls[b].range.begin, buckets_[b].begin) << when << ": call " << b;
      EXPECT_EQ(calls[b].range.end, buckets_[b].end) << when << ": call " << b;
    }
  }

  // One step's backward reporting `reports` (writing each range just before reporting it), then
  // finish(). After every report, exactly the buckets that are whole and in order have started;
  // each was started on this rank's final values; finish() leaves the exact sum everywhere.
  void run_step(int step, const std::vector<FlatRange>& reports) {
    recorder_->clear();
    poison();
    std::vector<bool> final(kN, false);
    for (const FlatRange& r : reports) {
      write(r, step);
      std::fill(final.begin() + r.begin, final.begin() + r.end, true);
      reducer_->grads_final(r);
      expect_calls_are_buckets(expected_started(final),
                               "step " + std::to_string(step) + ", after reporting [" +
                                   std::to_string(r.begin) + ", " + std::to_string(r.end) + ")");
    }
    // What backward did not report is final by now too (finish() may start it).
    for (int64_t i = 0; i < kN; ++i)
      if (!final[i]) grads()[i] = local_value(rank(), step, i);
    reducer_->finish();
    expect_calls_are_buckets(buckets_.size(), "step " + std::to_string(step) + ", after finish()");
    for (const auto& call : recorder_->calls()) {
      for (int64_t i = call.range.begin; i < call.range.end; ++i) {
        ASSERT_EQ(call.sent[static_cast<size_t>(i - call.range.begin)],
                  local_value(rank(), step, i))
            << "step " << step << ": the bucket [" << call.range.begin << ", " << call.range.end
            << ") started before element " << i << " was final";
      }
    }
    for (int64_t i = 0; i < kN; ++i)
      ASSERT_EQ(grads()[i], summed_value(size(), step, i)) << "step " << step << ", element " << i;
  }

  std::unique_ptr<Communicator> world_;
  Tensor grads_;  // (kN,) f32
  std::unique_ptr<RecordingCommunicator> recorder_;
  std::unique_ptr<GradientReducer> reducer_;
  std::vector<FlatRange> buckets_;
};

// [0, n) cut at `cuts` (sorted, inside), in a shuffled order seeded by `seed`.
std::vector<FlatRange> shuffled_pieces(std::vector<int64_t> cuts, uint64_t seed) {
  std::vector<FlatRange> pieces;
  int64_t begin = 0;
  cuts.push_back(kN);
  for (int64_t cut : cuts) {
    pieces.push_back({begin, cut});
    begin = cut;
  }
  std::mt19937_64 rng(seed);
  std::shuffle(pieces.begin(), pieces.end(), rng);
  return pieces;
}

TEST_F(GradientReducerTest, BucketsTileTheBufferFromItsEnd) {
  const auto& got = reducer_->buckets();
  ASSERT_EQ(got.size(), buckets_.size());
  ASSERT_EQ(got.size(), static_cast<size_t>((kN + kBucket - 1) / kBucket));
  for (size_t b = 0; b < got.size(); ++b) {
    EXPECT_EQ(got[b].begin, buckets_[b].begin) << b;
    EXPECT_EQ(got[b].end, buckets_[b].end) << b;
  }
  EXPECT_EQ(got.front().end, kN);
  EXPECT_EQ(got.back().begin, 0);
}

TEST_F(GradientReducerTest, SumsExactlyOverTwoStepsOfPiecesReportedOutOfOrder) {
  // Pieces of every size, none aligned with a bucket; each rank reports them in its own order (the
  // buckets still start in the same order everywhere, as the collectives require).
  const std::vector<int64_t> cuts = {1, 37, 95, 96, 200, 201, 333, 500, 650, 777, 900, 999};
  run_step(0, shuffled_pieces(cuts, 11 + static_cast<uint64_t>(rank())));
  // The second step re-uses the re-armed reducer, with other pieces in another order.
  run_step(1, shuffled_pieces({13, 480, 481, 905}, 23 + static_cast<uint64_t>(rank())));
}

TEST_F(GradientReducerTest, ABucketStartsOnlyWhenAllOfItAndEveryEarlierBucketAreFinal) {
  const FlatRange b0 = buckets_[0], b1 = buckets_[1], b2 = buckets_[2];
  run_step(0, {{b1.begin, b1.end},           // bucket 1 whole, bucket 0 not yet: nothing starts
               {b0.begin + 1, b0.end},       // bucket 0 but its first element: still nothing
               {b2.begin + 5, b2.end},       // most of bucket 2: still nothing
               {b0.begin, b0.begin + 1},     // bucket 0 complete: 0 and 1 start, in that order
               {b2.begin, b2.begin + 5},     // bucket 2 complete: it starts
               {b2.begin - 10, b2.begin}});  // part of bucket 3; finish() does the rest
  // Backward's usual order, from the end of the buffer in ranges of one "parameter" each.
  std::vector<FlatRange> backward_order;
  for (int64_t end = kN; end > 0; end -= 70)
    backward_order.push_back({std::max<int64_t>(0, end - 70), end});
  run_step(1, backward_order);
}

TEST_F(GradientReducerTest, FinishReducesEverythingWhenBackwardReportedNothing) {
  run_step(0, {});
  // And once more after a step that reported everything: nothing is left over from it.
  run_step(1, {{0, kN}});
  run_step(2, {});
}

TEST_F(GradientReducerTest, ReportingARangeTwiceInOneStepIsFatal) {
  GTEST_FLAG_SET(death_test_style, "fast");  // fork only: a re-executed child would join MPI
  const FlatRange b0 = buckets_[0];
  poison();
  write({0, kN}, 0);
  // Pieces that complete no bucket, so that the forked child has nothing in flight.
  reducer_->grads_final({b0.begin + 10, b0.begin + 20});
  ASSERT_TRUE(recorder_->calls().empty());
  EXPECT_DEATH(reducer_->grads_final({b0.begin + 10, b0.begin + 20}), "twice");
  EXPECT_DEATH(reducer_->grads_final({b0.begin + 15, b0.begin + 16}), "twice");
  EXPECT_DEATH(reducer_->grads_final({b0.begin, b0.begin + 11}), "twice");
  // A range that overlaps the reported one from the bucket before (a range across two buckets).
  EXPECT_DEATH(reducer_->grads_final({b0.begin - 5, b0.begin + 11}), "twice");
  // The parent goes on: the step still finishes with the exact sums on every rank.
  reducer_->finish();
  for (int64_t i = 0; i < kN; ++i) ASSERT_EQ(grads()[i], summed_value(size(), 0, i)) << i;
}

}  // namespace
}  // namespace memento::parallel
