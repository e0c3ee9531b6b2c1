#include "core/cuda/tensor_copy.h"

#include <cuda_runtime_api.h>

#include "core/cuda/check.h"
#include "core/cuda/elementwise.h"

namespace memento::cuda {
namespace {
bool on_gpu(const TensorView& t) { return t.device().kind == DeviceKind::kCuda; }

// A host copy of t in its own dtype (t itself when it is already on the host).
Tensor to_host(const TensorView& t) {
  Tensor h = Tensor::empty(t.shape(), t.dtype());
  CUDA_CHECK(cudaMemcpy(h.view().raw(), t.raw(), t.bytes(), cudaMemcpyDefault));
  return h;
}
}  // namespace

void copy_tensor(const TensorView& src, const TensorView& dst) {
  if (src.numel() == 0) return;
  if (src.dtype() == dst.dtype()) {
    CUDA_CHECK(cudaMemcpy(dst.raw(), src.raw(), src.bytes(), cudaMemcpyDefault));
    // A device-to-device cudaMemcpy may return before it has finished: wait, as promised.
    if (on_gpu(src) && on_gpu(dst)) CUDA_CHECK(cudaStreamSynchronize(nullptr));
    return;
  }
  const bool f32_bf16 = (src.dtype() == DType::kF32 || src.dtype() == DType::kBF16) &&
                        (dst.dtype() == DType::kF32 || dst.dtype() == DType::kBF16);
  if (on_gpu(src) && on_gpu(dst) && src.device() == dst.device() && f32_bf16) {
    // On the device (the compute copy of the parameters), then wait: copies are synchronous.
    ops::cuda::convert(src.reshape(dst.shape()), dst);
    CUDA_CHECK(cudaStreamSynchronize(nullptr));
    return;
  }
  const Tensor src_host = on_gpu(src) ? to_host(src) : Tensor();
  const void* from = on_gpu(src) ? src_host.view().raw() : src.raw();
  const size_t n = static_cast<size_t>(src.numel());
  if (!on_gpu(dst)) {
    convert(from, src.dtype(), dst.raw(), dst.dtype(), n);
    return;
  }
  const Tensor dst_host = Tensor::empty(dst.shape(), dst.dtype());
  convert(from, src.dtype(), dst_host.view().raw(), dst.dtype(), n);
  CUDA_CHECK(cudaMemcpy(dst.raw(), dst_host.view().raw(), dst.bytes(), cudaMemcpyDefault));
}

void fill_zero_tensor(const TensorView& t) {
  if (t.raw() == nullptr) return;
  CUDA_CHECK(cudaMemset(t.raw(), 0, t.bytes()));
}

}  // namespace memento::cuda
