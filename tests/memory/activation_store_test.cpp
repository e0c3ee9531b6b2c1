#include "memory/activation_store.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "core/error.h"
#include "memory/resources.h"

namespace memento {
namespace {

Tensor make(Shape shape, DType dtype = DType::kF32, MemoryResource* resource = nullptr) {
  return Tensor::empty(shape, dtype, Device::cpu(), resource);
}

TEST(KeepActivationStore, TakeReturnsWhatWasSaved) {
  KeepActivationStore store;
  EXPECT_TRUE(store.empty());
  const Tensor x = make(Shape{4, 8});
  for (int i = 0; i < 32; ++i) x.data<float>()[i] = static_cast<float>(i);
  store.save("layer0.x", x);
  EXPECT_FALSE(store.empty());
  const Tensor back = store.take("layer0.x");
  EXPECT_EQ(back.storage_id(), x.storage_id());
  EXPECT_EQ(back.shape(), (Shape{4, 8}));
  EXPECT_EQ(back.data<float>()[31], 31.0f);
  EXPECT_TRUE(store.empty());
  EXPECT_EQ(store.live_bytes(), 0u);
}

TEST(KeepActivationStore, KeepsTensorsAliveAfterTheCallerDropsThem) {
  TrackingResource tracking(default_resource(Device::cpu()));
  KeepActivationStore store;
  {
    const Tensor x = make(Shape{100}, DType::kF32, &tracking);
    x.data<float>()[99] = 5.0f;
    store.save("x", x);
  }
  EXPECT_EQ(tracking.current_bytes(), 400u);  // held by the store
  {
    const Tensor x = store.take("x");
    EXPECT_EQ(x.data<float>()[99], 5.0f);
  }
  EXPECT_EQ(tracking.current_bytes(), 0u);  // and released once taken and dropped
}

TEST(KeepActivationStore, RecordsSizesAndLifetimes) {
  KeepActivationStore store;
  store.save("a", make(Shape{10}, DType::kF32));     // event 0, 40 B
  store.save("b", make(Shape{2, 3}, DType::kBF16));  // event 1, 12 B
  (void)store.take("a");                             // event 2
  store.save("c", make(Shape{5}, DType::kF64));      // event 3, 40 B
  (void)store.take("c");                             // event 4
  const auto& r = store.records();
  ASSERT_EQ(r.size(), 3u);
  EXPECT_EQ(r[0].key, "a");
  EXPECT_EQ(r[0].shape, (Shape{10}));
  EXPECT_EQ(r[0].dtype, DType::kF32);
  EXPECT_EQ(r[0].bytes, 40u);
  EXPECT_EQ(r[0].saved_at, 0);
  EXPECT_EQ(r[0].taken_at, 2);
  EXPECT_EQ(r[1].key, "b");
  EXPECT_EQ(r[1].dtype, DType::kBF16);
  EXPECT_EQ(r[1].bytes, 12u);
  EXPECT_EQ(r[1].saved_at, 1);
  EXPECT_EQ(r[1].taken_at, -1);  // still live
  EXPECT_EQ(r[2].key, "c");
  EXPECT_EQ(r[2].bytes, 40u);
  EXPECT_EQ(r[2].saved_at, 3);
  EXPECT_EQ(r[2].taken_at, 4);
  EXPECT_EQ(store.live_bytes(), 12u);
  EXPECT_EQ(store.peak_bytes(), 52u);  // a and b together
}

TEST(KeepActivationStore, SharedStorageIsCountedOnce) {
  KeepActivationStore store;
  const Tensor x = make(Shape{4, 16});  // 256 B
  store.save("attn.input", x);
  store.save("mlp.input", x.reshape(Shape{64}));  // the same bytes under another key
  store.save("norm.input", x);
  EXPECT_EQ(store.live_bytes(), 256u);
  EXPECT_EQ(store.peak_bytes(), 256u);
  EXPECT_EQ(store.records()[0].bytes, 256u);
  EXPECT_EQ(store.records()[1].bytes, 0u);
  EXPECT_EQ(store.records()[2].bytes, 0u);
  // Taking the entry that paid does not free the storage while others hold it.
  (void)store.take("attn.input");
  EXPECT_EQ(store.live_bytes(), 256u);
  (void)store.take("norm.input");
  EXPECT_EQ(store.live_bytes(), 256u);
  (void)store.take("mlp.input");
  EXPECT_EQ(store.live_bytes(), 0u);
  // Saved again after all its entries went: counted again.
  store.save("again", x);
  EXPECT_EQ(store.live_bytes(), 256u);
  EXPECT_EQ(store.records().back().bytes, 256u);
  (void)store.take("again");
}

// Micro-batches key their entries apart, but bytes are bytes: one storage saved by two
// micro-batches (a tensor both read) is still held, and counted, once.
TEST(KeepActivationStore, SharedStorageIsCountedOnceAcrossMicroBatches) {
  KeepActivationStore store;
  const Tensor x = make(Shape{4, 16});  // 256 B
  store.set_micro_batch(0);
  store.save("rope/cos", x);
  store.set_micro_batch(1);
  store.save("rope/cos", x);
  EXPECT_EQ(store.live_bytes(), 256u);
  EXPECT_EQ(store.records()[1].bytes, 0u);
  EXPECT_EQ(store.records()[1].micro_batch, 1);
  (void)store.take("rope/cos");  // micro-batch 1's entry, which did not pay
  EXPECT_EQ(store.live_bytes(), 256u);
  store.set_micro_batch(0);
  (void)store.take("rope/cos");
  EXPECT_EQ(store.live_bytes(), 0u);
  EXPECT_EQ(store.peak_bytes(), 256u);
}

TEST(KeepActivationStore, MetaTensorsAreCountedLikeRealOnes) {
  KeepActivationStore store;
  const Tensor a = Tensor::empty(Shape{1024, 1024}, DType::kBF16, Device::meta());
  const Tensor b = Tensor::empty(Shape{1024, 1024}, DType::kBF16, Device::meta());
  store.save("a", a);
  store.save("b", b);
  store.save("a2", a.reshape(Shape{1 << 20}));
  EXPECT_EQ(store.live_bytes(), 4u << 20);
  (void)store.take("a");
  (void)store.take("a2");
  EXPECT_EQ(store.live_bytes(), 2u << 20);
  (void)store.take("b");
  EXPECT_EQ(store.peak_bytes(), 4u << 20);
}

TEST(KeepActivationStore, ClearRecordsResetsRecordsPeakAndEvents) {
  KeepActivationStore store;
  store.save("a", make(Shape{100}));
  (void)store.take("a");
  EXPECT_EQ(store.peak_bytes(), 400u);
  store.clear_records();
  EXPECT_TRUE(store.records().empty());
  EXPECT_EQ(store.peak_bytes(), 0u);
  store.save("b", make(Shape{10}));
  EXPECT_EQ(store.records()[0].saved_at, 0);
  EXPECT_EQ(store.peak_bytes(), 40u);
  (void)store.take("b");
}

// Random saves and takes, with aliasing, against a TrackingResource that sees the real
// allocations: with the caller holding nothing, the store's live bytes are the live heap bytes.
TEST(KeepActivationStore, LiveAndPeakBytesMatchTheAllocator) {
  TrackingResource tracking(default_resource(Device::cpu()));
  KeepActivationStore store;
  std::mt19937 gen(3);
  std::vector<std::string> live;
  size_t peak = 0;
  int next_key = 0;
  for (int step = 0; step < 2000; ++step) {
    const int action = static_cast<int>(gen() % 3);
    if (action == 0 || live.empty()) {  // a new tensor
      const auto rows = static_cast<int64_t>(1 + gen() % 50);
      const std::string key = detail::concat("k", next_key++);
      store.save(key, make(Shape{rows, 4}, DType::kF32, &tracking));
      live.push_back(key);
    } else if (action == 1) {  // an alias of a live tensor under a new key
      const std::string& source = live[gen() % live.size()];
      Tensor t = store.take(source);
      store.save(source, t);
      const std::string key = detail::concat("k", next_key++);
      store.save(key, t.reshape(Shape{t.numel()}));
      live.push_back(key);
    } else {
      const size_t i = gen() % live.size();
      (void)store.take(live[i]);
      live.erase(live.begin() + static_cast<std::ptrdiff_t>(i));
    }
    ASSERT_EQ(store.live_bytes(), tracking.current_bytes()) << "step " << step;
    peak = std::max(peak, tracking.current_bytes());
  }
  EXPECT_EQ(store.peak_bytes(), peak);
  for (const auto& key : live) (void)store.take(key);
  EXPECT_EQ(store.live_bytes(), 0u);
  EXPECT_EQ(tracking.current_bytes(), 0u);
  EXPECT_TRUE(store.empty());
}

TEST(KeepActivationStoreDeathTest, MisuseIsFatal) {
  EXPECT_DEATH(
      {
        KeepActivationStore store;
        (void)store.take("never.saved");
      },
      "never.saved");
  EXPECT_DEATH(
      {
        KeepActivationStore store;
        store.save("x", make(Shape{2}));
        (void)store.take("x");
        (void)store.take("x");
      },
      "taken twice");
  EXPECT_DEATH(
      {
        KeepActivationStore store;
        store.save("x", make(Shape{2}));
        store.save("x", make(Shape{2}));
      },
      "saved twice.*x");
  EXPECT_DEATH(
      {
        KeepActivationStore store;
        store.save("undef", Tensor());
      },
      "undefined.*undef");
  EXPECT_DEATH(
      {
        KeepActivationStore store;
        store.save("x", make(Shape{2}));
        store.clear_records();
      },
      "live");
}

}  // namespace
}  // namespace memento
