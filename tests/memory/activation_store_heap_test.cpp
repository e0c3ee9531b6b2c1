// The store's bookkeeping over many steps costs the heap nothing once the first steps have sized
// its containers: every operator new of this executable is counted, so records kept beyond one
// step (the leak a run of many steps would have) show up as bytes that stay allocated.
#include <gtest/gtest.h>

#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <new>
#include <string>

#include "core/error.h"
#include "memory/activation_store.h"

namespace {

constexpr size_t kHeader = 16;  // keeps the returned pointer 16-byte aligned, like malloc's
std::atomic<int64_t> g_heap_bytes{0};

void* counted_new(size_t n) {
  void* base = std::malloc(n + kHeader);
  if (base == nullptr) throw std::bad_alloc();
  *static_cast<size_t*>(base) = n;
  g_heap_bytes += static_cast<int64_t>(n);
  return static_cast<char*>(base) + kHeader;
}

void counted_delete(void* p) noexcept {
  if (p == nullptr) return;
  void* base = static_cast<char*>(p) - kHeader;
  g_heap_bytes -= static_cast<int64_t>(*static_cast<size_t*>(base));
  std::free(base);
}

}  // namespace

// The aligned forms are left to the library: they pair among themselves and are not counted.
void* operator new(size_t n) { return counted_new(n); }
void* operator new[](size_t n) { return counted_new(n); }
void operator delete(void* p) noexcept { counted_delete(p); }
void operator delete[](void* p) noexcept { counted_delete(p); }
void operator delete(void* p, size_t) noexcept { counted_delete(p); }
void operator delete[](void* p, size_t) noexcept { counted_delete(p); }

namespace memento {
namespace {

// One step as a pipeline stage runs it: two micro-batches, a few layers each, every activation
// taken by the backward.
void run_step(KeepActivationStore& store) {
  constexpr int kLayers = 4;
  store.begin_step();
  for (int64_t m = 0; m < 2; ++m) {
    store.set_micro_batch(m);
    for (int l = 0; l < kLayers; ++l) {
      const std::string layer = detail::concat("model.layers.", l);
      LayerScope scope(store, layer, Phase::kForward);
      store.save(layer + "/x", Tensor::empty(Shape{8, 16}, DType::kF32));
      store.save(layer + "/rstd", Tensor::empty(Shape{8}, DType::kF32));
    }
  }
  for (int64_t m = 0; m < 2; ++m) {
    store.set_micro_batch(m);
    for (int l = kLayers - 1; l >= 0; --l) {
      const std::string layer = detail::concat("model.layers.", l);
      LayerScope scope(store, layer, Phase::kBackward);
      (void)store.take(layer + "/rstd");
      (void)store.take(layer + "/x");
    }
  }
  store.end_step();
}

TEST(ActivationStoreHeap, ManyStepsHoldNoMoreHeapThanTheFirstFew) {
  KeepActivationStore store;
  for (int step = 0; step < 10; ++step) run_step(store);  // containers reach their size
  const int64_t after_warm_up = g_heap_bytes.load();
  ASSERT_GT(after_warm_up, 0) << "operator new is not being counted";
  for (int step = 0; step < 5000; ++step) run_step(store);
  EXPECT_EQ(g_heap_bytes.load(), after_warm_up) << "heap bytes grew over 5000 steps";
  EXPECT_EQ(store.last_step().records.size(), 16u);  // one step: 2 micro-batches x 4 layers x 2
  EXPECT_EQ(store.last_step().step, 5009);
}

}  // namespace
}  // namespace memento
