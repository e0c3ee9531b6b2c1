#include "core/device.h"

#include "core/error.h"

#ifdef MEMENTO_WITH_CUDA
#include <cuda_runtime_api.h>

#include "core/cuda/check.h"
#include "core/cuda/device_resource.h"
#include "core/cuda/gemm.h"
#include "core/cuda/op_profiler.h"
#endif

namespace memento {

bool cuda_usable() {
#ifdef MEMENTO_WITH_CUDA
  return cuda::cuda_available();
#else
  return false;
#endif
}

Device select_cuda_device(int local_rank, int local_world, const std::string& what) {
#ifdef MEMENTO_WITH_CUDA
  MEMENTO_EXPECT(cuda::cuda_available(), ConfigError, "config: ", what,
                 ": cuda requested, but no GPU is visible (check nvidia-smi and "
                 "CUDA_VISIBLE_DEVICES)");
  const int count = cuda::cuda_device_count();
  MEMENTO_EXPECT(local_world <= count, ConfigError, "config: ", what, ": ", local_world,
                 " ranks on this node but ", count, " visible GPU", count == 1 ? "" : "s",
                 "; start at most one rank per GPU");
  const int index = local_rank % count;
  CUDA_CHECK(cudaSetDevice(index));
  return Device{DeviceKind::kCuda, index};
#else
  (void)local_rank;
  (void)local_world;
  throw ConfigError(detail::concat("config: ", what,
                                   ": cuda requested, but this build has no CUDA backend "
                                   "(configure with -DMEMENTO_CUDA=ON where nvcc is installed)"));
#endif
}

MemoryResource* cuda_device_memory(Device device) {
#ifdef MEMENTO_WITH_CUDA
  MEMENTO_CHECK(device.kind == DeviceKind::kCuda, "cuda_device_memory(", device_name(device), ")");
  return cuda::caching_device_resource(device.index);
#else
  MEMENTO_CHECK(false, "cuda_device_memory(", device_name(device), ") in a build without CUDA");
  return nullptr;
#endif
}

MemoryResource* pinned_host_memory() {
#ifdef MEMENTO_WITH_CUDA
  return cuda::pinned_host_resource();
#else
  return default_resource(Device::cpu());
#endif
}

void synchronize(Device device) {
#ifdef MEMENTO_WITH_CUDA
  if (device.kind == DeviceKind::kCuda) {
    const cuda::DeviceGuard guard(device.index);
    CUDA_CHECK(cudaDeviceSynchronize());
  }
#else
  (void)device;
#endif
}

std::string describe_device(Device device) {
#ifdef MEMENTO_WITH_CUDA
  if (device.kind == DeviceKind::kCuda) {
    cudaDeviceProp prop{};
    CUDA_CHECK(cudaGetDeviceProperties(&prop, device.index));
    return detail::concat(prop.name, " (", device_name(device), ", ",
                          static_cast<double>(prop.totalGlobalMem) / (1024.0 * 1024 * 1024),
                          " GiB)");
  }
#endif
  return device_name(device);
}

size_t gpu_library_workspace_bytes() {
#ifdef MEMENTO_WITH_CUDA
  return ops::cuda::kGemmWorkspaceBytes;
#else
  return 0;
#endif
}

void set_op_profiling(bool on) {
#ifdef MEMENTO_WITH_CUDA
  cuda::set_op_profiling(on);
#else
  (void)on;
#endif
}

std::string op_profile_report(double step_ms) {
#ifdef MEMENTO_WITH_CUDA
  return cuda::op_profile_report(step_ms);
#else
  (void)step_ms;
  return {};
#endif
}

}  // namespace memento
