#include "core/tensor.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <map>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/memory_resource.h"
#include "memory/resources.h"

namespace memento {
namespace {

// Forwards to an upstream resource and records every allocation, checking that each release
// names a pointer and size that were handed out.
class RecordingResource final : public MemoryResource {
 public:
  explicit RecordingResource(MemoryResource* upstream) : upstream_(upstream) {}
  void* allocate(size_t bytes) override {
    void* p = upstream_->allocate(bytes);
    ++allocations;
    live_bytes += bytes;
    if (p) live_[p] = bytes;
    return p;
  }
  void deallocate(void* ptr, size_t bytes) noexcept override {
    ++deallocations;
    live_bytes -= bytes;
    if (ptr) {
      auto it = live_.find(ptr);
      if (it == live_.end() || it->second != bytes) ++bad_releases;
      if (it != live_.end()) live_.erase(it);
    }
    upstream_->deallocate(ptr, bytes);
  }
  Device device() const override { return upstream_->device(); }
  std::string name() const override { return "recording"; }

  int allocations = 0;
  int deallocations = 0;
  int64_t live_bytes = 0;  // signed, so that a double release shows as negative
  int bad_releases = 0;

 private:
  MemoryResource* upstream_;
  std::map<void*, size_t> live_;
};

// Runs fn and returns the ShapeError message, or "" (with a failure) when nothing was thrown.
template <typename Fn>
std::string shape_error_of(Fn fn) {
  try {
    fn();
  } catch (const ShapeError& e) {
    return e.what();
  }
  ADD_FAILURE() << "no ShapeError";
  return "";
}

bool contains(const std::string& s, const std::string& part) {
  return s.find(part) != std::string::npos;
}

// ---- Shape ---------------------------------------------------------------------------------

TEST(Shape, DimsNumelAndString) {
  const Shape s{2, 3, 4};
  EXPECT_EQ(s.ndim(), 3);
  EXPECT_EQ(s[0], 2);
  EXPECT_EQ(s[2], 4);
  EXPECT_EQ(s[-1], 4);
  EXPECT_EQ(s[-3], 2);
  EXPECT_EQ(s.numel(), 24);
  EXPECT_EQ(s.str(), "[2, 3, 4]");
  EXPECT_EQ(Shape{}.ndim(), 0);
  EXPECT_EQ(Shape{}.numel(), 1);  // a scalar
  EXPECT_EQ(Shape{}.str(), "[]");
  EXPECT_EQ((Shape{5, 0, 3}).numel(), 0);
  EXPECT_EQ((Shape{1, 2, 3, 4, 5, 6}).numel(), 720);
  EXPECT_EQ((Shape{int64_t{1} << 20, int64_t{1} << 20}).numel(), int64_t{1} << 40);  // no overflow
}

TEST(Shape, WithDimAndEquality) {
  const Shape s{2, 3, 4};
  EXPECT_EQ(s.with_dim(1, 7), (Shape{2, 7, 4}));
  EXPECT_EQ(s.with_dim(-1, 9), (Shape{2, 3, 9}));
  EXPECT_EQ(s, (Shape{2, 3, 4}));  // with_dim does not modify
  EXPECT_FALSE(s == (Shape{2, 3}));
  EXPECT_FALSE((Shape{2, 3}) == s);
  EXPECT_FALSE(s == (Shape{2, 3, 4, 1}));
  EXPECT_FALSE(s == (Shape{4, 3, 2}));
  EXPECT_FALSE((Shape{24}) == s);
  EXPECT_TRUE(Shape{} == Shape{});
}

TEST(ShapeDeathTest, TooManyDimsIsFatal) {
  EXPECT_DEATH((Shape{1, 2, 3, 4, 5, 6, 7}), "too many dims");
}

// ---- Tensor --------------------------------------------------------------------------------

TEST(Tensor, EmptyHasShapeDtypeBytesAndAlignedData) {
  const Tensor undefined;
  EXPECT_FALSE(undefined.defined());
  for (DType dtype : {DType::kF32, DType::kF64, DType::kBF16, DType::kF8E4M3, DType::kI64}) {
    const Tensor t = Tensor::empty(Shape{3, 5}, dtype);
    EXPECT_TRUE(t.defined());
    EXPECT_EQ(t.shape(), (Shape{3, 5}));
    EXPECT_EQ(t.size(0), 3);
    EXPECT_EQ(t.size(-1), 5);
    EXPECT_EQ(t.numel(), 15);
    EXPECT_EQ(t.dtype(), dtype);
    EXPECT_EQ(t.bytes(), 15 * dtype_size(dtype));
    EXPECT_EQ(t.device(), Device::cpu());
    EXPECT_NE(t.view().raw(), nullptr);
    EXPECT_EQ(reinterpret_cast<uintptr_t>(t.view().raw()) % MemoryResource::kAlignment, 0u)
        << dtype_name(dtype);
  }
}

TEST(Tensor, ZerosAreZeroForEveryDtype) {
  RecordingResource rec(default_resource(Device::cpu()));
  // Dirty the memory first so that zeros() has something to clear (same resource, same sizes).
  for (DType dtype :
       {DType::kF32, DType::kF64, DType::kBF16, DType::kF16, DType::kI32, DType::kU16}) {
    {
      const Tensor dirty = Tensor::empty(Shape{257}, dtype, Device::cpu(), &rec);
      std::memset(dirty.view().raw(), 0xA5, dirty.bytes());
    }
    const Tensor t = Tensor::zeros(Shape{257}, dtype, Device::cpu(), &rec);
    const auto* bytes = static_cast<const unsigned char*>(t.view().raw());
    for (size_t i = 0; i < t.bytes(); ++i) ASSERT_EQ(bytes[i], 0) << dtype_name(dtype) << " " << i;
  }
}

TEST(Tensor, TypedAccessChecksTheDtype) {
  const Tensor t = Tensor::zeros(Shape{4}, DType::kF32);
  EXPECT_EQ(t.data<float>(), t.view().raw());
  EXPECT_DEATH((void)t.data<double>(), "f32.*f64");
  const Tensor i = Tensor::zeros(Shape{4}, DType::kI64);
  EXPECT_DEATH((void)i.data<int32_t>(), "i64.*i32");
}

TEST(Tensor, CopiesAndReshapesShareStorage) {
  RecordingResource rec(default_resource(Device::cpu()));
  {
    const Tensor a = Tensor::empty(Shape{2, 6}, DType::kF32, Device::cpu(), &rec);
    for (int i = 0; i < 12; ++i) a.data<float>()[i] = static_cast<float>(i);
    const Tensor b = a;  // NOLINT: a copy shares
    const Tensor c = a.reshape(Shape{3, 4});
    EXPECT_EQ(rec.allocations, 1);
    EXPECT_EQ(b.storage_id(), a.storage_id());
    EXPECT_EQ(c.storage_id(), a.storage_id());
    EXPECT_EQ(c.view().raw(), a.view().raw());
    EXPECT_EQ(c.shape(), (Shape{3, 4}));
    EXPECT_EQ(a.shape(), (Shape{2, 6}));  // reshape returns a new tensor
    c.data<float>()[5] = 42.0f;
    EXPECT_EQ(a.data<float>()[5], 42.0f);
    const Tensor other = Tensor::empty(Shape{2, 6}, DType::kF32, Device::cpu(), &rec);
    EXPECT_NE(other.storage_id(), a.storage_id());
    EXPECT_NE(Tensor().storage_id(), a.storage_id());
  }
  EXPECT_EQ(rec.allocations, 2);
  EXPECT_EQ(rec.deallocations, 2);
  EXPECT_EQ(rec.live_bytes, 0);
  EXPECT_EQ(rec.bad_releases, 0);
}

TEST(Tensor, StorageLivesUntilTheLastSharerGoes) {
  RecordingResource rec(default_resource(Device::cpu()));
  Tensor survivor;
  {
    const Tensor a = Tensor::empty(Shape{100}, DType::kF64, Device::cpu(), &rec);
    survivor = a.reshape(Shape{10, 10});
    EXPECT_EQ(rec.live_bytes, 800);
  }
  EXPECT_EQ(rec.deallocations, 0);
  EXPECT_EQ(rec.live_bytes, 800);
  survivor.data<double>()[99] = 1.0;  // still valid memory (ASan would tell)
  survivor = Tensor();
  EXPECT_EQ(rec.deallocations, 1);
  EXPECT_EQ(rec.live_bytes, 0);
  EXPECT_EQ(rec.bad_releases, 0);
}

TEST(Tensor, ReshapeOfTheWrongSizeIsAShapeError) {
  const Tensor t = Tensor::empty(Shape{2, 3}, DType::kF32);
  const std::string msg = shape_error_of([&] { (void)t.reshape(Shape{4, 2}); });
  EXPECT_TRUE(contains(msg, "[2, 3]")) << msg;
  EXPECT_TRUE(contains(msg, "[4, 2]")) << msg;
  EXPECT_TRUE(contains(msg, "reshape")) << msg;
  EXPECT_EQ(t.reshape(Shape{6}).shape(), (Shape{6}));
  EXPECT_EQ(t.reshape(Shape{1, 6, 1}).numel(), 6);
}

TEST(Tensor, EmptyLikeAndDefaultResource) {
  RecordingResource rec(default_resource(Device::cpu()));
  {
    ScopedDefaultResource scope(&rec);
    EXPECT_EQ(default_resource(Device::cpu()), &rec);
    const Tensor t = Tensor::empty(Shape{7, 3}, DType::kBF16);
    const Tensor u = Tensor::empty_like(t);
    EXPECT_EQ(u.shape(), t.shape());
    EXPECT_EQ(u.dtype(), DType::kBF16);
    EXPECT_NE(u.storage_id(), t.storage_id());
    EXPECT_EQ(rec.allocations, 2);
    EXPECT_EQ(rec.live_bytes, 2 * 21 * 2);
  }
  EXPECT_NE(default_resource(Device::cpu()), &rec);  // restored
  EXPECT_EQ(rec.live_bytes, 0);
  EXPECT_EQ(rec.bad_releases, 0);
}

TEST(Tensor, ZeroElementTensors) {
  RecordingResource rec(default_resource(Device::cpu()));
  {
    const Tensor t = Tensor::zeros(Shape{0, 4}, DType::kF32, Device::cpu(), &rec);
    EXPECT_TRUE(t.defined());
    EXPECT_EQ(t.numel(), 0);
    EXPECT_EQ(t.bytes(), 0u);
    EXPECT_EQ(t.view().slice(0, 0).numel(), 0);
  }
  EXPECT_EQ(rec.live_bytes, 0);
  EXPECT_EQ(rec.bad_releases, 0);
}

TEST(Tensor, RefusedAllocationReleasesNothing) {
  // A refused allocation must not be "released": the resource never handed the bytes out. With a
  // LimitResource, a spurious release would drive its live count below zero (it wraps).
  LimitResource limit(default_resource(Device::cpu()), 1000);
  RecordingResource rec(&limit);
  EXPECT_THROW(Tensor::empty(Shape{1000}, DType::kF32, Device::cpu(), &rec), OutOfMemoryError);
  EXPECT_EQ(rec.deallocations, 0) << "released an allocation that failed";
  EXPECT_EQ(rec.live_bytes, 0);
  EXPECT_EQ(limit.current_bytes(), 0u);
  // And the budget is still usable.
  const Tensor t = Tensor::empty(Shape{250}, DType::kF32, Device::cpu(), &limit);
  EXPECT_EQ(limit.current_bytes(), 1000u);
}

// ---- TensorView ----------------------------------------------------------------------------

TEST(TensorView, SliceOffsetsTheLeadingDimension) {
  const Tensor t = Tensor::empty(Shape{5, 2, 3}, DType::kF64);
  for (int i = 0; i < 30; ++i) t.data<double>()[i] = i;
  const TensorView s = t.view().slice(1, 4);
  EXPECT_EQ(s.shape(), (Shape{3, 2, 3}));
  EXPECT_EQ(s.dtype(), DType::kF64);
  EXPECT_EQ(s.data<double>()[0], 6.0);
  EXPECT_EQ(s.data<double>()[17], 23.0);
  EXPECT_EQ(t.view().slice(0, 5).raw(), t.view().raw());
  EXPECT_EQ(t.view().slice(5, 5).numel(), 0);
  const TensorView s2 = s.slice(2, 3);  // slice of a slice
  EXPECT_EQ(s2.data<double>()[0], 18.0);
  // Narrow dtypes: the offset is in elements, not bytes.
  const Tensor h = Tensor::empty(Shape{4, 3}, DType::kBF16);
  EXPECT_EQ(static_cast<char*>(h.view().slice(3, 4).raw()) - static_cast<char*>(h.view().raw()),
            3 * 3 * 2);
}

TEST(TensorView, SliceOutOfRangeIsAShapeError) {
  const TensorView v = Tensor::empty(Shape{4, 3}, DType::kF32).view();
  for (auto [b, e] : std::vector<std::pair<int64_t, int64_t>>{{0, 5}, {-1, 2}, {3, 2}, {5, 5}}) {
    const std::string msg = shape_error_of([&] { (void)v.slice(b, e); });
    EXPECT_TRUE(contains(msg, "[4, 3]")) << msg;
    EXPECT_TRUE(contains(msg, detail::concat("[", b, ", ", e, ")"))) << msg;
  }
  const TensorView scalar = Tensor::empty(Shape{}, DType::kF32).view();
  const std::string msg = shape_error_of([&] { (void)scalar.slice(0, 0); });
  EXPECT_TRUE(contains(msg, "[]")) << msg;
}

TEST(TensorView, FlatRangeViewsElements) {
  const Tensor t = Tensor::empty(Shape{4, 8}, DType::kF32);
  for (int i = 0; i < 32; ++i) t.data<float>()[i] = static_cast<float>(i);
  const TensorView r = t.view().flat_range(5, Shape{3, 4});
  EXPECT_EQ(r.shape(), (Shape{3, 4}));
  EXPECT_EQ(r.data<float>()[0], 5.0f);
  EXPECT_EQ(r.data<float>()[11], 16.0f);
  EXPECT_EQ(t.view().flat_range(32, Shape{0}).numel(), 0);  // empty range at the end
  EXPECT_EQ(t.view().flat_range(0, Shape{32}).raw(), t.view().raw());
  const Tensor i16 = Tensor::empty(Shape{10}, DType::kU16);
  EXPECT_EQ(static_cast<char*>(i16.view().flat_range(3, Shape{2}).raw()) -
                static_cast<char*>(i16.view().raw()),
            6);
}

TEST(TensorView, FlatRangeOutOfRangeIsAShapeError) {
  const TensorView v = Tensor::empty(Shape{4, 8}, DType::kF32).view();
  struct Case {
    int64_t offset;
    Shape shape;
  };
  for (const Case& c : {Case{30, Shape{3}}, Case{-1, Shape{2}}, Case{0, Shape{33}},
                        Case{33, Shape{0}}, Case{16, Shape{4, 5}}}) {
    const std::string msg = shape_error_of([&] { (void)v.flat_range(c.offset, c.shape); });
    EXPECT_TRUE(contains(msg, std::to_string(c.offset))) << msg;
    EXPECT_TRUE(contains(msg, c.shape.str())) << msg;
    EXPECT_TRUE(contains(msg, "[4, 8]")) << msg;
  }
}

TEST(TensorView, ReshapeKeepsBytes) {
  const Tensor t = Tensor::empty(Shape{6, 4}, DType::kI32);
  const TensorView r = t.view().reshape(Shape{2, 3, 4});
  EXPECT_EQ(r.raw(), t.view().raw());
  EXPECT_EQ(r.dtype(), DType::kI32);
  EXPECT_EQ(r.bytes(), t.bytes());
  const std::string msg = shape_error_of([&] { (void)t.view().reshape(Shape{5, 5}); });
  EXPECT_TRUE(contains(msg, "[6, 4]") && contains(msg, "[5, 5]")) << msg;
}

// ---- expect_shape, expect_dtype, copy, fill_zero ----------------------------------------

TEST(Checks, ExpectShapeAndDtypeMessages) {
  const Tensor t = Tensor::empty(Shape{2, 3}, DType::kF32);
  EXPECT_NO_THROW(expect_shape(t, Shape{2, 3}, "rmsnorm input"));
  std::string msg = shape_error_of([&] { expect_shape(t, Shape{3, 2}, "rmsnorm input"); });
  EXPECT_TRUE(contains(msg, "rmsnorm input")) << msg;
  EXPECT_TRUE(contains(msg, "expected shape [3, 2]")) << msg;
  EXPECT_TRUE(contains(msg, "got [2, 3]")) << msg;
  EXPECT_LT(msg.find("[3, 2]"), msg.find("[2, 3]")) << "expected first, then actual: " << msg;
  msg = shape_error_of([&] { expect_shape(t, Shape{2, 3, 1}, "x"); });
  EXPECT_TRUE(contains(msg, "[2, 3, 1]")) << msg;
  EXPECT_NO_THROW(expect_dtype(t, DType::kF32, "w"));
  msg = shape_error_of([&] { expect_dtype(t, DType::kBF16, "lm_head weight"); });
  EXPECT_TRUE(contains(msg, "lm_head weight")) << msg;
  EXPECT_TRUE(contains(msg, "bf16")) << msg;
  EXPECT_TRUE(contains(msg, "f32")) << msg;
}

TEST(Checks, CopyConvertsAndChecksSizes) {
  const Tensor src = Tensor::empty(Shape{2, 3}, DType::kF32);
  const float values[] = {1.0f, -2.5f, 3.0f, 1.0f / 3.0f, 1e6f, -0.0f};
  std::memcpy(src.data<float>(), values, sizeof(values));
  const Tensor dst = Tensor::empty(Shape{6}, DType::kF64);
  copy(src, dst);  // shapes may differ, sizes may not
  for (int i = 0; i < 6; ++i) EXPECT_EQ(dst.data<double>()[i], static_cast<double>(values[i]));
  const Tensor same = Tensor::empty(Shape{3, 2}, DType::kF32);
  copy(src, same);
  EXPECT_EQ(std::memcmp(same.view().raw(), values, sizeof(values)), 0);
  const Tensor small = Tensor::empty(Shape{5}, DType::kF32);
  const std::string msg = shape_error_of([&] { copy(src, small); });
  EXPECT_TRUE(contains(msg, "[2, 3]") && contains(msg, "[5]")) << msg;
  fill_zero(dst);
  for (int i = 0; i < 6; ++i) EXPECT_EQ(dst.data<double>()[i], 0.0);
  fill_zero(dst.view().slice(0, 0));  // nothing to do
}

// ---- kMeta ---------------------------------------------------------------------------------

TEST(Meta, TensorsHaveShapesButNoBytes) {
  EXPECT_EQ(default_resource(Device::meta())->device(), Device::meta());
  const Tensor t = Tensor::zeros(Shape{1024, 1024}, DType::kF32, Device::meta());
  EXPECT_TRUE(t.defined());
  EXPECT_TRUE(t.view().is_meta());
  EXPECT_EQ(t.device(), Device::meta());
  EXPECT_EQ(t.view().raw(), nullptr);
  EXPECT_EQ(t.bytes(), size_t{4} << 20);  // what a real run would hold
  const TensorView s = t.view().slice(10, 20);
  EXPECT_EQ(s.raw(), nullptr);
  EXPECT_EQ(s.shape(), (Shape{10, 1024}));
  EXPECT_TRUE(s.is_meta());
  EXPECT_EQ(t.view().flat_range(7, Shape{3}).raw(), nullptr);
  const Tensor r = t.reshape(Shape{1 << 20});
  EXPECT_EQ(r.storage_id(), t.storage_id());  // aliasing is visible on kMeta too
  EXPECT_NE(Tensor::empty(Shape{4}, DType::kF32, Device::meta()).storage_id(), t.storage_id());
  // Copies and fills on kMeta do nothing (and do not crash).
  const Tensor cpu = Tensor::zeros(Shape{1024, 1024}, DType::kF32);
  copy(t, cpu);
  copy(cpu, t);
  fill_zero(t);
  EXPECT_EQ(Tensor::empty_like(t).device(), Device::meta());
}

TEST(Meta, TrackingResourceAsMetaDefaultCountsAndReleasesBytes) {
  MemoryResource* const previous = default_resource(Device::meta());
  RecordingResource rec(previous);
  TrackingResource tracking(&rec);
  ASSERT_EQ(tracking.device(), Device::meta());
  {
    ScopedDefaultResource scope(&tracking);
    EXPECT_EQ(default_resource(Device::meta()), &tracking);
    EXPECT_NE(default_resource(Device::cpu()), &tracking);  // the CPU default is untouched
    {
      const Tensor a = Tensor::empty(Shape{8, 16}, DType::kF32, Device::meta());
      const Tensor b = Tensor::zeros(Shape{3}, DType::kBF16, Device::meta());
      const Tensor a2 = a.reshape(Shape{128});  // shared: not counted twice
      EXPECT_EQ(tracking.current_bytes(), 8u * 16u * 4u + 3u * 2u);
      const Tensor cpu = Tensor::empty(Shape{100}, DType::kF32);
      EXPECT_EQ(tracking.current_bytes(), 8u * 16u * 4u + 3u * 2u);
    }
    EXPECT_EQ(tracking.current_bytes(), 0u);
    EXPECT_EQ(tracking.peak_bytes(), 8u * 16u * 4u + 3u * 2u);
    EXPECT_EQ(rec.allocations, 2);
    EXPECT_EQ(rec.deallocations, 2);
    EXPECT_EQ(rec.live_bytes, 0);
  }
  EXPECT_EQ(default_resource(Device::meta()), previous);
}

TEST(MetaDeathTest, AResourceOnAnotherDeviceIsFatal) {
  SystemResource system;
  EXPECT_DEATH(Tensor::empty(Shape{4}, DType::kF32, Device::meta(), &system), "not on meta");
}

TEST(Devices, NamesAndResources) {
  EXPECT_EQ(device_name(Device::cpu()), "cpu");
  EXPECT_EQ(device_name(Device::meta()), "meta");
  EXPECT_EQ(device_name(Device{DeviceKind::kCuda, 3}), "cuda:3");
  EXPECT_FALSE(Device::cpu() == Device::meta());
  EXPECT_TRUE(Device::cpu().is_cpu());
  EXPECT_TRUE(Device::meta().is_meta());
  EXPECT_THROW(default_resource(Device{DeviceKind::kCuda, 1000}), Error);  // no such device
  SystemResource system;
  void* p = system.allocate(100);
  ASSERT_NE(p, nullptr);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(p) % MemoryResource::kAlignment, 0u);
  std::memset(p, 1, 100);
  system.deallocate(p, 100);
  MetaResource meta;
  EXPECT_EQ(meta.allocate(1 << 30), nullptr);
}

}  // namespace
}  // namespace memento
