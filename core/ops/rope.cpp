#include "core/ops/rope.h"

#include <cmath>
#include <map>
#include <mutex>
#include <tuple>

#include "core/ops/cpu_common.h"
#include "core/ops/dispatch.h"
#ifdef MEMENTO_WITH_CUDA
#include "core/cuda/device_resource.h"
#include "core/cuda/rope.h"
#endif

namespace memento::ops {
namespace {

using detail::dispatch_float;

// Below this many elements a parallel region costs more than it saves.
constexpr int64_t kMinParallelWork = 1 << 16;

void check_rope(const TensorView& x, const RopeTable& table, const char* op) {
  MEMENTO_EXPECT(x.ndim() == 4, ShapeError, op, ": x must be (B, T, NH, HS), got ",
                 x.shape().str());
  const int64_t T = x.size(1), HS = x.size(3);
  MEMENTO_EXPECT(HS % 2 == 0, ShapeError, op, ": head size must be even, got ", HS);
  expect_shape(table.cos, Shape{T, HS / 2}, "rope table cos");
  expect_shape(table.sin, Shape{T, HS / 2}, "rope table sin");
  expect_dtype(table.cos, x.dtype(), "rope table cos");
  expect_dtype(table.sin, x.dtype(), "rope table sin");
}

// direction +1 rotates by +angle (forward), -1 by -angle (backward: the transpose).
template <typename T>
void rotate(const TensorView& x, const RopeTable& table, T direction) {
  const int64_t B = x.size(0), Tn = x.size(1), NH = x.size(2), HS = x.size(3), half = HS / 2;
  T* p = x.data<T>();
  const T* cos = table.cos.data<T>();
  const T* sin = table.sin.data<T>();
#pragma omp parallel for collapse(2) schedule(static) if (x.numel() >= kMinParallelWork)
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t t = 0; t < Tn; ++t) {
      const T* c = cos + t * half;  // (HS/2)
      const T* s = sin + t * half;  // (HS/2)
      for (int64_t h = 0; h < NH; ++h) {
        T* lo = p + ((b * Tn + t) * NH + h) * HS;  // (HS/2)
        T* hi = lo + half;                         // (HS/2)
        for (int64_t i = 0; i < half; ++i) {
          const T a = lo[i], bb = hi[i], si = direction * s[i];
          lo[i] = a * c[i] - bb * si;
          hi[i] = bb * c[i] + a * si;
        }
      }
    }
  }
}

}  // namespace

RopeTable rope_table(int64_t T, int64_t HS, double theta, DType dtype, Device device,
                     int64_t first_position) {
  MEMENTO_EXPECT(HS > 0 && HS % 2 == 0 && T >= 0, ShapeError,
                 "rope_table: head size must be even and positive, got T ", T, ", HS ", HS);
  const int64_t half = HS / 2;
#ifdef MEMENTO_WITH_CUDA
  if (on_cuda(TensorView(nullptr, Shape{}, dtype, device))) {
    // Computed on the host in fp64 and copied once per (shape, theta, device): a copy per layer
    // call would make the host wait for the GPU every time. The cached tables live as long as
    // the process (a few hundred KiB each).
    using Key = std::tuple<int64_t, int64_t, double, DType, int, int64_t>;
    static std::mutex mutex;
    // Leaked on purpose: freeing device memory after the CUDA runtime shut down at exit fails.
    static auto& cache = *new std::map<Key, RopeTable>();
    const Key key{T, HS, theta, dtype, device.index, first_position};
    const std::lock_guard<std::mutex> lock(mutex);
    auto it = cache.find(key);
    if (it == cache.end()) {
      const RopeTable host = rope_table(T, HS, theta, dtype, Device::cpu(), first_position);
      MemoryResource* pool = ::memento::cuda::caching_device_resource(device.index);
      RopeTable table{Tensor::empty({T, half}, dtype, device, pool),
                      Tensor::empty({T, half}, dtype, device, pool)};
      copy(host.cos, table.cos);
      copy(host.sin, table.sin);
      it = cache.emplace(key, std::move(table)).first;
    }
    return it->second;
  }
#endif
  RopeTable table{Tensor::empty({T, half}, dtype, device), Tensor::empty({T, half}, dtype, device)};
  if (device.is_meta()) return table;
  dispatch_float(dtype, "rope_table", "dtype", [&](auto zero) {
    using Real = decltype(zero);
    Real* c = table.cos.data<Real>();
    Real* s = table.sin.data<Real>();
    for (int64_t i = 0; i < half; ++i) {
      const double inv_freq =
          std::pow(theta, -2.0 * static_cast<double>(i) / static_cast<double>(HS));
      for (int64_t t = 0; t < T; ++t) {
        const double angle = static_cast<double>(first_position + t) * inv_freq;
        c[t * half + i] = static_cast<Real>(std::cos(angle));
        s[t * half + i] = static_cast<Real>(std::sin(angle));
      }
    }
  });
  return table;
}

void rope_(const TensorView& x, const RopeTable& table) {
  MEMENTO_CUDA_DISPATCH(x, cuda::rope_(x, table.cos, table.sin));
  check_rope(x, table, "rope_");
  if (x.is_meta()) return;
  dispatch_float(x.dtype(), "rope_", "x", [&](auto zero) { rotate<decltype(zero)>(x, table, 1); });
}

void rope_backward_(const TensorView& dx, const RopeTable& table) {
  MEMENTO_CUDA_DISPATCH(dx, cuda::rope_backward_(dx, table.cos, table.sin));
  check_rope(dx, table, "rope_backward_");
  if (dx.is_meta()) return;
  dispatch_float(dx.dtype(), "rope_backward_", "dx",
                 [&](auto zero) { rotate<decltype(zero)>(dx, table, -1); });
}

}  // namespace memento::ops
