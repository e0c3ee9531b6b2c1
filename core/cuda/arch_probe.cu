#include "core/cuda/arch_probe.h"

#include <algorithm>

namespace memento::cuda {
namespace {

// Does nothing: compiled for the same architectures as every kernel of the library, so asking
// for its attributes asks whether the GPU can load them.
__global__ void kernel_image_probe() {}

}  // namespace

std::string built_architectures() {
  // CMake hands the list over with ',' for ';' (which would split the definition).
  std::string list = MEMENTO_CUDA_ARCHITECTURES;
  std::replace(list.begin(), list.end(), ',', ';');
  return list;
}

cudaError_t probe_kernel_image() {
  cudaFuncAttributes attributes{};
  const cudaError_t status = cudaFuncGetAttributes(&attributes, kernel_image_probe);
  if (status != cudaSuccess) (void)cudaGetLastError();
  return status;
}

}  // namespace memento::cuda
