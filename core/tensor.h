// Tensor (owning, shares its storage) and TensorView (non-owning, cheap, passed by value).
// Tensors are dense and row-major; shapes use the vocabulary B, T, C, NH, HS, V, L.
#pragma once

#include <array>
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "core/error.h"
#include "core/memory_resource.h"

namespace memento {

class Shape {
 public:
  static constexpr int kMaxDims = 6;

  Shape() = default;
  Shape(std::initializer_list<int64_t> dims);
  explicit Shape(const std::vector<int64_t>& dims);

  int ndim() const { return ndim_; }
  int64_t operator[](int i) const { return dims_[i < 0 ? ndim_ + i : i]; }
  int64_t numel() const;
  std::string str() const;  // "[2, 3, 4]"
  // This shape with dimension i set to value.
  Shape with_dim(int i, int64_t value) const {
    Shape s = *this;
    s.dims_[i < 0 ? ndim_ + i : i] = value;
    return s;
  }
  friend bool operator==(const Shape& a, const Shape& b);

 private:
  std::array<int64_t, kMaxDims> dims_{};
  int ndim_ = 0;
};

class TensorView {
 public:
  TensorView() = default;
  TensorView(void* data, Shape shape, DType dtype, Device device = Device::cpu())
      : data_(data), shape_(shape), dtype_(dtype), device_(device) {}

  const Shape& shape() const { return shape_; }
  int64_t size(int dim) const { return shape_[dim]; }
  int ndim() const { return shape_.ndim(); }
  int64_t numel() const { return shape_.numel(); }
  size_t bytes() const { return static_cast<size_t>(numel()) * dtype_size(dtype_); }
  DType dtype() const { return dtype_; }
  Device device() const { return device_; }
  bool is_meta() const { return device_.is_meta(); }
  void* raw() const { return data_; }

  // Typed access; T must match the dtype (checked).
  template <typename T>
  T* data() const {
    MEMENTO_CHECK(DTypeOf<T>::value == dtype_, "tensor is ", dtype_name(dtype_), ", accessed as ",
                  dtype_name(DTypeOf<T>::value));
    return static_cast<T*>(data_);
  }

  // Same bytes, new shape with the same number of elements.
  TensorView reshape(Shape shape) const;
  // Rows [begin, end) of the leading dimension.
  TensorView slice(int64_t begin, int64_t end) const;
  // Elements [offset, offset + shape.numel()) of the flat data, viewed with `shape`.
  TensorView flat_range(int64_t offset, Shape shape) const;

 private:
  void* data_ = nullptr;
  Shape shape_;
  DType dtype_ = DType::kF32;
  Device device_;
};

class Tensor {
 public:
  Tensor() = default;

  // Uninitialised bytes from `resource` (the device's default resource when null).
  static Tensor empty(Shape shape, DType dtype, Device device = Device::cpu(),
                      MemoryResource* resource = nullptr);
  static Tensor zeros(Shape shape, DType dtype, Device device = Device::cpu(),
                      MemoryResource* resource = nullptr);
  // A tensor of the same shape, dtype and device as `like`.
  static Tensor empty_like(const TensorView& like);

  TensorView view() const { return view_; }
  operator TensorView() const { return view_; }  // NOLINT: views are how ops take tensors
  const Shape& shape() const { return view_.shape(); }
  int64_t size(int dim) const { return view_.size(dim); }
  int64_t numel() const { return view_.numel(); }
  size_t bytes() const { return view_.bytes(); }
  DType dtype() const { return view_.dtype(); }
  Device device() const { return view_.device(); }
  bool defined() const { return storage_ != nullptr; }
  // Identifies the storage shared by tensors that alias the same bytes (also on kMeta).
  const void* storage_id() const { return storage_.get(); }
  template <typename T>
  T* data() const {
    return view_.data<T>();
  }
  // A tensor sharing this one's storage with another shape of the same size.
  Tensor reshape(Shape shape) const;

 private:
  struct Storage;
  std::shared_ptr<Storage> storage_;
  TensorView view_;
};

// Throws ShapeError naming `what` when t's shape is not `expected`.
void expect_shape(const TensorView& t, const Shape& expected, const char* what);
void expect_dtype(const TensorView& t, DType expected, const char* what);
// Copies src into dst (same shape; dtypes may differ, converting). Synchronous; copy_async
// (core/stream.h) queues a same-dtype copy on a stream.
void copy(const TensorView& src, const TensorView& dst);
void fill_zero(const TensorView& t);

}  // namespace memento
