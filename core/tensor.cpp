#include "core/tensor.h"

#include <cstring>
#include <sstream>

#ifdef MEMENTO_WITH_CUDA
#include "core/cuda/tensor_copy.h"
#endif

namespace memento {

Shape::Shape(std::initializer_list<int64_t> dims) {
  MEMENTO_CHECK(static_cast<int>(dims.size()) <= kMaxDims, "too many dims: ", dims.size());
  for (int64_t d : dims) dims_[ndim_++] = d;
}

Shape::Shape(const std::vector<int64_t>& dims) {
  MEMENTO_CHECK(static_cast<int>(dims.size()) <= kMaxDims, "too many dims: ", dims.size());
  for (int64_t d : dims) dims_[ndim_++] = d;
}

int64_t Shape::numel() const {
  int64_t n = 1;
  for (int i = 0; i < ndim_; ++i) n *= dims_[i];
  return n;
}

std::string Shape::str() const {
  std::ostringstream os;
  os << '[';
  for (int i = 0; i < ndim_; ++i) os << (i ? ", " : "") << dims_[i];
  os << ']';
  return os.str();
}

bool operator==(const Shape& a, const Shape& b) {
  if (a.ndim_ != b.ndim_) return false;
  for (int i = 0; i < a.ndim_; ++i)
    if (a.dims_[i] != b.dims_[i]) return false;
  return true;
}

TensorView TensorView::reshape(Shape shape) const {
  MEMENTO_EXPECT(shape.numel() == numel(), ShapeError, "cannot reshape ", shape_.str(), " to ",
                 shape.str());
  return {data_, shape, dtype_, device_};
}

TensorView TensorView::slice(int64_t begin, int64_t end) const {
  MEMENTO_EXPECT(ndim() >= 1 && 0 <= begin && begin <= end && end <= shape_[0], ShapeError,
                 "slice [", begin, ", ", end, ") out of range for ", shape_.str());
  const int64_t row = shape_[0] == 0 ? 0 : numel() / shape_[0];
  const Shape s = shape_.with_dim(0, end - begin);
  char* base = static_cast<char*>(data_);
  void* p = base ? base + begin * row * static_cast<int64_t>(dtype_size(dtype_)) : nullptr;
  return {p, s, dtype_, device_};
}

TensorView TensorView::flat_range(int64_t offset, Shape shape) const {
  MEMENTO_EXPECT(offset >= 0 && offset + shape.numel() <= numel(), ShapeError, "range at ", offset,
                 " of ", shape.str(), " exceeds ", shape_.str());
  char* base = static_cast<char*>(data_);
  void* p = base ? base + offset * static_cast<int64_t>(dtype_size(dtype_)) : nullptr;
  return {p, shape, dtype_, device_};
}

struct Tensor::Storage {
  MemoryResource* resource = nullptr;
  void* data = nullptr;
  size_t bytes = 0;
  // kMeta storage has bytes but no data; its resource still hears of the release so that a
  // tracking resource over it measures what a real run would hold.
  ~Storage() {
    if (bytes) resource->deallocate(data, bytes);
  }
};

Tensor Tensor::empty(Shape shape, DType dtype, Device device, MemoryResource* resource) {
  if (!resource) resource = default_resource(device);
  MEMENTO_CHECK(resource->device() == device, "resource ", resource->name(), " is not on ",
                device_name(device));
  Tensor t;
  t.storage_ = std::make_shared<Storage>();
  t.storage_->resource = resource;
  const size_t bytes = static_cast<size_t>(shape.numel()) * dtype_size(dtype);
  t.storage_->data = resource->allocate(bytes);  // may throw: then nothing is released
  t.storage_->bytes = bytes;
  t.view_ = TensorView(t.storage_->data, shape, dtype, device);
  return t;
}

Tensor Tensor::zeros(Shape shape, DType dtype, Device device, MemoryResource* resource) {
  Tensor t = empty(shape, dtype, device, resource);
  fill_zero(t);
  return t;
}

Tensor Tensor::empty_like(const TensorView& like) {
  return empty(like.shape(), like.dtype(), like.device());
}

Tensor Tensor::reshape(Shape shape) const {
  Tensor t = *this;
  t.view_ = view_.reshape(shape);
  return t;
}

void expect_shape(const TensorView& t, const Shape& expected, const char* what) {
  MEMENTO_EXPECT(t.shape() == expected, ShapeError, what, ": expected shape ", expected.str(),
                 ", got ", t.shape().str());
}

void expect_dtype(const TensorView& t, DType expected, const char* what) {
  MEMENTO_EXPECT(t.dtype() == expected, ShapeError, what, ": expected dtype ", dtype_name(expected),
                 ", got ", dtype_name(t.dtype()));
}

void copy(const TensorView& src, const TensorView& dst) {
  MEMENTO_EXPECT(src.numel() == dst.numel(), ShapeError, "copy: ", src.shape().str(), " into ",
                 dst.shape().str());
  if (src.is_meta() || dst.is_meta()) return;
  if (src.device().kind == DeviceKind::kCuda || dst.device().kind == DeviceKind::kCuda) {
#ifdef MEMENTO_WITH_CUDA
    cuda::copy_tensor(src, dst);
    return;
#else
    MEMENTO_CHECK(false, "copy: CUDA tensor in a build without CUDA");
#endif
  }
  convert(src.raw(), src.dtype(), dst.raw(), dst.dtype(), static_cast<size_t>(src.numel()));
}

void fill_zero(const TensorView& t) {
  if (t.is_meta() || t.raw() == nullptr) return;
#ifdef MEMENTO_WITH_CUDA
  if (t.device().kind == DeviceKind::kCuda) return cuda::fill_zero_tensor(t);
#endif
  std::memset(t.raw(), 0, t.bytes());
}

}  // namespace memento
