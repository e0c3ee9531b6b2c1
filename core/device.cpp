#include "core/device.h"

#include <charconv>
#include <optional>
#include <string_view>
#include <vector>

#include "core/error.h"

#ifdef MEMENTO_WITH_CUDA
#include <cuda_runtime_api.h>

#include "core/cuda/arch_probe.h"
#include "core/cuda/check.h"
#include "core/cuda/device_resource.h"
#include "core/cuda/gemm.h"
#include "core/cuda/op_profiler.h"
#endif

namespace memento {
namespace {

// The bf16 kernels use mma.sync on bf16, which Ampere (8.0) brought.
constexpr int kMinComputeMajor = 8;

// One entry of CMAKE_CUDA_ARCHITECTURES: "80", "90-real", "90a", "100f-virtual".
struct CudaArch {
  int major = 0;
  int minor = 0;
  char variant = 0;  // 'a': that GPU only; 'f': its major family; 0: neither
  bool sass = true;  // machine code for major.minor
  bool ptx = true;   // PTX, which the driver compiles for a GPU of the same or higher capability
};

// Null for an entry of another form ("native", "all", "all-major").
std::optional<CudaArch> parse_cuda_arch(std::string_view entry) {
  CudaArch arch;
  if (entry.ends_with("-real")) {
    arch.ptx = false;
    entry.remove_suffix(std::string_view("-real").size());
  } else if (entry.ends_with("-virtual")) {
    arch.sass = false;
    entry.remove_suffix(std::string_view("-virtual").size());
  }
  if (!entry.empty() && (entry.back() == 'a' || entry.back() == 'f')) {
    arch.variant = entry.back();
    entry.remove_suffix(1);
  }
  int number = 0;
  const char* end = entry.data() + entry.size();
  const auto [stop, error] = std::from_chars(entry.data(), end, number);
  if (error != std::errc() || stop != end || number < 10) return std::nullopt;
  arch.major = number / 10;
  arch.minor = number % 10;
  return arch;
}

bool loads_on(const CudaArch& arch, int major, int minor) {
  if (arch.variant == 'a') return major == arch.major && minor == arch.minor;
  const bool same_family = major == arch.major && minor >= arch.minor;
  if (arch.variant == 'f') return same_family;
  return (arch.sass && same_family) ||
         (arch.ptx && major * 10 + minor >= arch.major * 10 + arch.minor);
}

// The entries of a CMake list, blanks trimmed, empty ones dropped.
std::vector<std::string_view> cmake_list(std::string_view list) {
  std::vector<std::string_view> entries;
  while (!list.empty()) {
    const size_t cut = list.find_first_of(";,");
    std::string_view entry = list.substr(0, cut);
    list = cut == std::string_view::npos ? std::string_view() : list.substr(cut + 1);
    while (!entry.empty() && entry.front() == ' ') entry.remove_prefix(1);
    while (!entry.empty() && entry.back() == ' ') entry.remove_suffix(1);
    if (!entry.empty()) entries.push_back(entry);
  }
  return entries;
}

// "sm_90", "sm_90a", "compute_90 (PTX only)".
std::string describe_arch(std::string_view entry) {
  const std::optional<CudaArch> arch = parse_cuda_arch(entry);
  if (!arch) return std::string(entry);
  const std::string code = detail::concat(arch->major * 10 + arch->minor,
                                          arch->variant != 0 ? std::string(1, arch->variant) : "");
  return arch->sass ? "sm_" + code : "compute_" + code + " (PTX only)";
}

}  // namespace

namespace detail {

std::string cuda_rebuild_message(int index, const std::string& name, int major, int minor,
                                 const std::string& architectures) {
  std::string built;
  for (const std::string_view entry : cmake_list(architectures))
    built += (built.empty() ? "" : ", ") + describe_arch(entry);
  const int gpu = major * 10 + minor;
  return concat("this build has kernels for ", built.empty() ? "no architecture" : built,
                " (CMAKE_CUDA_ARCHITECTURES=", architectures, "), but GPU ", index, " (", name,
                ") is sm_", gpu, ": rebuild with -DCMAKE_CUDA_ARCHITECTURES=", gpu,
                built.empty()
                    ? std::string()
                    : concat(" (or \"", architectures, ";", gpu, "\" to keep the others)"));
}

std::string cuda_arch_problem(int index, const std::string& name, int major, int minor,
                              const std::string& architectures) {
  if (major < kMinComputeMajor)
    return concat("GPU ", index, " (", name, ") has compute capability ", major, ".", minor,
                  ", but Memento's CUDA kernels need ", kMinComputeMajor,
                  ".0 or newer (bf16 tensor cores: A100, RTX 30 series, L4, H100 or later); "
                  "use such a GPU, or the CPU");
  const std::vector<std::string_view> entries = cmake_list(architectures);
  for (const std::string_view entry : entries) {
    const std::optional<CudaArch> arch = parse_cuda_arch(entry);
    if (!arch || loads_on(*arch, major, minor)) return {};  // loads, or the probe will tell
  }
  if (entries.empty()) return {};
  return cuda_rebuild_message(index, name, major, minor, architectures);
}

}  // namespace detail

#ifdef MEMENTO_WITH_CUDA
namespace {

// ConfigError naming `what` when this build cannot run on GPU `index`, the current device.
void check_gpu_runs_this_build(int index, const std::string& what) {
  cudaDeviceProp prop{};
  CUDA_CHECK(cudaGetDeviceProperties(&prop, index));
  const std::string architectures = cuda::built_architectures();
  std::string problem =
      detail::cuda_arch_problem(index, prop.name, prop.major, prop.minor, architectures);
  if (problem.empty()) {
    // The runtime's word on the same question: it loads a kernel of this library.
    const cudaError_t image = cuda::probe_kernel_image();
    if (image == cudaErrorNoKernelImageForDevice || image == cudaErrorInvalidDeviceFunction) {
      problem =
          detail::cuda_rebuild_message(index, prop.name, prop.major, prop.minor, architectures);
    } else if (image == cudaErrorUnsupportedPtxVersion) {
      const int gpu = prop.major * 10 + prop.minor;
      problem = detail::concat(
          "GPU ", index, " (", prop.name, ", sm_", gpu, ") would run this build's PTX (",
          "CMAKE_CUDA_ARCHITECTURES=", architectures, "), but the driver is older than the CUDA ",
          CUDART_VERSION / 1000, ".", CUDART_VERSION % 1000 / 10,
          " toolkit that built it: update the driver, or rebuild with "
          "-DCMAKE_CUDA_ARCHITECTURES=",
          gpu);
    } else {
      CUDA_CHECK(image);
    }
  }
  MEMENTO_EXPECT(problem.empty(), ConfigError, "config: ", what, ": ", problem);
}

}  // namespace
#endif

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
  check_gpu_runs_this_build(index, what);
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
