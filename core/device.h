// The run's compute device, seen from code that must not include CUDA headers (the trainer,
// tests): choosing a GPU, its memory resource, waiting for it, naming it. Every function works in
// a build without CUDA, where asking for a GPU is a ConfigError that says how to get one.
#pragma once

#include <string>

#include "core/memory_resource.h"

namespace memento {

// Makes GPU local_rank current for this thread and returns it. Throws ConfigError naming `what`
// (a config key) when the build has no CUDA, no GPU is visible, the node runs more ranks
// (local_world) than it has GPUs (NCCL cannot put two ranks on one GPU), or the build cannot run
// on the GPU: compute capability below 8.0, or no kernel image for it (the message says which
// -DCMAKE_CUDA_ARCHITECTURES to rebuild with).
Device select_cuda_device(int local_rank, int local_world, const std::string& what);
// The process-wide caching pool of a CUDA device.
MemoryResource* cuda_device_memory(Device device);
// Page-locked host memory for copies to and from a GPU (DMA straight from it, no staging copy
// by the driver); the CPU's default resource in a build without CUDA.
MemoryResource* pinned_host_memory();
// Waits until the device has finished all queued work (no-op for the CPU and kMeta).
void synchronize(Device device);
// "NVIDIA H200 (cuda:0, 139.8 GiB)" or "cpu".
std::string describe_device(Device device);
// True when this build can run CUDA and a GPU is visible.
bool cuda_usable();
// Device memory the GPU libraries hold outside any tensor (the cuBLASLt workspace), per GPU.
size_t gpu_library_workspace_bytes();
// The GPU op profiler (core/cuda/op_profiler.h): on/off, and the table of the ops recorded since
// it was turned on, as shares of a step of `step_ms` (empty without CUDA).
void set_op_profiling(bool on);
std::string op_profile_report(double step_ms);

namespace detail {
// Why a build for `architectures` (CMAKE_CUDA_ARCHITECTURES as CMake spells it: "90", "80;90",
// "90-real", "90a", "100f") cannot run on GPU `index` (`name`, compute capability major.minor), or
// empty when it can: the GPU must be 8.0 or newer (the bf16 kernels' tensor cores), and one entry
// must load on it as CUDA loads it: SASS on the same major with no lower minor, PTX on any GPU of
// no lower capability ("-real" is SASS only, "-virtual" PTX only, a plain entry both), "a" on
// exactly its GPU, "f" on its major family. A list with an entry it cannot judge ("native",
// "all") passes: the kernel-image probe at start-up has the last word.
std::string cuda_arch_problem(int index, const std::string& name, int major, int minor,
                              const std::string& architectures);
// The message for GPU `index` that a build for `architectures` has no kernel image for: what the
// build has and the -DCMAKE_CUDA_ARCHITECTURES to rebuild with.
std::string cuda_rebuild_message(int index, const std::string& name, int major, int minor,
                                 const std::string& architectures);
}  // namespace detail

}  // namespace memento
