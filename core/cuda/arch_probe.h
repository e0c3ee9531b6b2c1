// Can this build's kernels run on the current GPU? The architectures the build has kernels for,
// and a probe that asks the CUDA runtime to load one of them. select_cuda_device() turns a "no"
// into a ConfigError (core/device.h); without it every kernel launch would fail deep inside the
// first op. Only built with MEMENTO_WITH_CUDA.
#pragma once

#include <cuda_runtime_api.h>

#include <string>

namespace memento::cuda {

// CMAKE_CUDA_ARCHITECTURES of this build, as CMake spells it: "90", "80;90", "90-real", ...
std::string built_architectures();
// cudaSuccess when the current device can load this library's kernels (its SASS, or its PTX
// through the driver's JIT); otherwise what cudaFuncGetAttributes said, e.g.
// cudaErrorNoKernelImageForDevice or cudaErrorUnsupportedPtxVersion, cleared for the next check.
cudaError_t probe_kernel_image();

}  // namespace memento::cuda
