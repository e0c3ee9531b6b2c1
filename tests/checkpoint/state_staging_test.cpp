// StateStaging: mirrors of published state buffers, the copies between them on a stream of their
// own, and before_mutation(), the wait that keeps a staged copy from seeing the next update.
#include "checkpoint/state_staging.h"

#include <gtest/gtest.h>

#include <chrono>
#include <condition_variable>
#include <mutex>
#include <thread>

namespace memento::checkpoint {
namespace {

Tensor counting(int64_t n, float first) {
  Tensor t = Tensor::empty(Shape{n}, DType::kF32);
  for (int64_t i = 0; i < n; ++i) t.data<float>()[i] = first + static_cast<float>(i);
  return t;
}

bool all_equal(const TensorView& t, float first) {
  for (int64_t i = 0; i < t.numel(); ++i)
    if (t.data<float>()[i] != first + static_cast<float>(i)) return false;
  return true;
}

TEST(StateStaging, HostSourcesAreReadInPlaceUnlessAFrozenCopyIsAsked) {
  const Tensor source = counting(100, 0);
  StateStaging in_place;
  EXPECT_EQ(in_place.stage(source).raw(), source.view().raw());
  EXPECT_EQ(in_place.mirror_bytes(), 0u);
  StateStaging frozen(/*copy_host=*/true);
  const TensorView mirror = frozen.stage(source);
  EXPECT_NE(mirror.raw(), source.view().raw());
  EXPECT_EQ(frozen.mirror_bytes(), source.bytes());
  EXPECT_EQ(mirror.data<float>()[5], 0.0f);  // zeroed until the first copy
  frozen.start_to_host();
  frozen.wait_to_host();
  EXPECT_TRUE(all_equal(mirror, 0));
}

TEST(StateStaging, CopyFromHostRestoresTheSources) {
  Tensor source = counting(64, 0);
  StateStaging staging(true);
  const TensorView mirror = staging.stage(source);
  for (int64_t i = 0; i < 64; ++i) mirror.data<float>()[i] = 100.0f + static_cast<float>(i);
  staging.copy_from_host();
  EXPECT_TRUE(all_equal(source, 100));
}

// A gate on the staging stream holds the copy back until a helper thread opens it.
struct Gate {
  std::mutex mutex;
  std::condition_variable cv;
  bool open = false;
  void wait() {
    std::unique_lock lock(mutex);
    cv.wait(lock, [&] { return open; });
  }
  void release() {
    std::lock_guard lock(mutex);
    open = true;
    cv.notify_all();
  }
};

// The step's sequence: a snapshot's copy is in flight, then before_mutation(), then the optimizer
// writes. The copy must hold the values from before the write. Returns whether it does.
bool staged_copy_survives_the_update() {
  constexpr int64_t kN = 1 << 16;
  Tensor source = counting(kN, 0);
  StateStaging staging(/*copy_host=*/true);
  const TensorView mirror = staging.stage(source);
  Gate gate;
  enqueue(staging.stream(), [&] { gate.wait(); });  // the copy queues behind the gate
  staging.start_to_host();
  std::thread opener([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    gate.release();
  });
  staging.before_mutation();
  for (int64_t i = 0; i < kN; ++i) source.data<float>()[i] = -1.0f;  // the optimizer's update
  opener.join();
  staging.wait_to_host();
  return all_equal(mirror, 0);
}

TEST(StateStaging, BeforeMutationWaitsForCopiesStillReadingTheState) {
  EXPECT_TRUE(staged_copy_survives_the_update());
}

TEST(StateStaging, WithoutTheWaitTheStagedCopySeesTheUpdate) {
  const bool previous = StateStaging::skip_mutation_wait_for_testing(true);
  const bool survived = staged_copy_survives_the_update();
  StateStaging::skip_mutation_wait_for_testing(previous);
  EXPECT_FALSE(survived) << "the test cannot tell a guarded copy from an unguarded one";
}

}  // namespace
}  // namespace memento::checkpoint
