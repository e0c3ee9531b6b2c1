// Streams on a GPU: a 256 MiB device-to-host copy into pinned memory on a side stream finishes
// while GEMMs run on the compute stream (events on both streams say so), events order two GPU
// streams and a CPU stream after a GPU one, and the caching pool's stream-ordered allocation never
// hands a block freed on one stream to another while the first stream's work on it still runs.
// Skips without a GPU.
#include "core/stream.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "core/cuda/device_resource.h"
#include "core/cuda/gemm.h"
#include "core/cuda/stream.h"
#include "core/device.h"
#include "core/ops/matmul.h"
#include "tests/cuda/cuda_testing.h"

namespace memento::testing {
namespace {

class CudaStreams : public CudaTest {};
// Timed on the device clock: scripts/gpu_check.sh keeps it out of compute-sanitizer, which
// serialises work.
class CudaStreamOverlap : public CudaTest {};

// A pinned host tensor of `bytes` holding a hash of each 4-byte word's index (any bit pattern:
// copies move bytes, they never read them as floats).
Tensor pinned_pattern(size_t bytes) {
  Tensor t = Tensor::empty(Shape{static_cast<int64_t>(bytes / 4)}, DType::kF32, Device::cpu(),
                           pinned_host_memory());
  auto* words = static_cast<uint32_t*>(t.view().raw());
  for (size_t i = 0; i < bytes / 4; ++i) words[i] = static_cast<uint32_t>(i) * 2654435761u + 1;
  return t;
}

TEST_F(CudaStreams, SideStreamsAreNonBlockingAndComputeIsTheLegacyStream) {
  const StreamView compute = compute_stream(kGpu);
  EXPECT_EQ(compute.handle(), static_cast<void*>(cudaStreamLegacy));
  EXPECT_FALSE(compute.is_synchronous());
  Stream side(kGpu);
  unsigned int flags = 0;
  CUDA_CHECK(cudaStreamGetFlags(cuda::native(side), &flags));
  EXPECT_EQ(flags & cudaStreamNonBlocking, static_cast<unsigned>(cudaStreamNonBlocking));
  bool ran = false;
  enqueue(side, [&] { ran = true; });
  side.synchronize();
  EXPECT_TRUE(ran);
}

// The overlap the issue asks for (Must show 6). GEMMs are queued first on the compute stream, the
// copy after them on the side stream; the host waits for the copy's completion event and then
// finds the GEMMs' end event not yet reached, and the device clock puts the copy's end before
// the GEMMs' end.
TEST_F(CudaStreamOverlap, A256MiBDeviceToHostCopyOnASideStreamFinishesWhileGemmsRun) {
  constexpr size_t kBytes = size_t{256} << 20;
  constexpr int64_t kN = 8192;  // (kN, kN) bf16 GEMMs, 1.1 TFLOP each
  const Tensor expected = pinned_pattern(kBytes);
  const Tensor device_src = Tensor::empty(expected.shape(), DType::kF32, kGpu);
  copy(expected, device_src);  // synchronous: ready for any stream
  const Tensor host_dst =
      Tensor::empty(expected.shape(), DType::kF32, Device::cpu(), pinned_host_memory());
  std::memset(host_dst.view().raw(), 0, kBytes);
  const Tensor a = random_gpu(Shape{kN, kN}, DType::kBF16, 1);
  const TensorView b = a;
  const Tensor c = Tensor::empty(Shape{kN, kN}, DType::kBF16, kGpu);
  const StreamView compute = compute_stream(kGpu);
  Stream side(kGpu);

  // Alone, each: a GEMM on the compute stream, the copy on the side stream.
  Event t0, t1;
  ops::matmul(a, false, b, false, c);  // warm-up: cuBLASLt's plan and workspace
  t0.record(compute);
  ops::matmul(a, false, b, false, c);
  t1.record(compute);
  t1.synchronize();
  const double gemm_ms = t1.elapsed_ms_since(t0);
  t0.record(side);
  copy_async(device_src, host_dst, side);
  t1.record(side);
  t1.synchronize();
  const double copy_alone_ms = t1.elapsed_ms_since(t0);
  std::memset(host_dst.view().raw(), 0, kBytes);
  // Enough GEMMs to outlast the copy four times over.
  const int gemms = std::clamp(static_cast<int>(std::ceil(4 * copy_alone_ms / gemm_ms)), 2, 500);

  Event gemm_start, gemm_end, copy_start, copy_end;
  gemm_start.record(compute);
  for (int i = 0; i < gemms; ++i) ops::matmul(a, false, b, false, c);
  gemm_end.record(compute);
  copy_start.record(side);
  copy_async(device_src, host_dst, side);
  copy_end.record(side);

  copy_end.synchronize();
  const bool gemms_still_running = !gemm_end.query();
  gemm_end.synchronize();
  const double copy_start_ms = copy_start.elapsed_ms_since(gemm_start);
  const double copy_end_ms = copy_end.elapsed_ms_since(gemm_start);
  const double gemm_end_ms = gemm_end.elapsed_ms_since(gemm_start);
  std::printf(
      "[timing] stream overlap: D2H 256 MiB pinned alone %.2f ms (%.1f GB/s); %d bf16 "
      "GEMMs %d^3 %.2f ms; copy on the side stream %.2f..%.2f ms, GEMMs 0..%.2f ms: %s\n",
      copy_alone_ms, static_cast<double>(kBytes) / copy_alone_ms / 1e6, gemms, static_cast<int>(kN),
      gemm_end_ms, copy_start_ms, copy_end_ms, gemm_end_ms,
      gemms_still_running && copy_end_ms < gemm_end_ms ? "OVERLAPPED" : "NOT overlapped");
  EXPECT_TRUE(gemms_still_running) << "the GEMMs had ended when the copy's event fired";
  EXPECT_LT(copy_end_ms, gemm_end_ms);
  EXPECT_LT(copy_start_ms, gemm_end_ms);
  EXPECT_EQ(std::memcmp(host_dst.view().raw(), expected.view().raw(), kBytes), 0);
}

// GPU stream B waits for an event of GPU stream A, which first runs GEMMs and then writes the
// block; a CPU stream waits for B's event before reading what B copied to pinned memory.
TEST_F(CudaStreams, EventsOrderGpuStreamsAndACpuStreamAfterAGpuOne) {
  constexpr size_t kBytes = size_t{16} << 20;
  constexpr int64_t kN = 4096;
  const Tensor a = random_gpu(Shape{kN, kN}, DType::kBF16, 3);
  const Tensor c = Tensor::empty(Shape{kN, kN}, DType::kBF16, kGpu);
  ops::matmul(a, false, a, false, c);  // warm-up on the compute stream (the shared workspace)
  synchronize(kGpu);
  const Tensor block = Tensor::zeros(Shape{static_cast<int64_t>(kBytes / 4)}, DType::kF32, kGpu);
  const Tensor host =
      Tensor::zeros(block.shape(), DType::kF32, Device::cpu(), pinned_host_memory());
  Stream first(kGpu), second(kGpu), cpu(Device::cpu());
  // Only `first` runs GEMMs while the compute stream is idle (one cuBLASLt workspace per GPU).
  for (int i = 0; i < 20; ++i)
    ops::cuda::matmul(a, false, a, false, c, 1.0, 0.0, cuda::native(first));
  CUDA_CHECK(cudaMemsetAsync(block.view().raw(), 0x5A, kBytes, cuda::native(first)));
  Event written, copied;
  written.record(first);
  second.wait(written);
  copy_async(block, host, second);
  copied.record(second);
  cpu.wait(copied);
  size_t mismatches = kBytes;
  enqueue(cpu, [&] {
    const auto* p = static_cast<const unsigned char*>(host.view().raw());
    mismatches = static_cast<size_t>(
        std::count_if(p, p + kBytes, [](unsigned char x) { return x != 0x5A; }));
  });
  cpu.synchronize();
  EXPECT_EQ(mismatches, 0u) << "a stream read the block before the event it waited for";
  first.synchronize();
}

// A block allocated and written on stream A (behind long GEMMs) is freed on A while A is still
// busy; stream B allocates the same size at once and writes it. Whether the pool hands B the same
// block or another, B's bytes must survive A's late write: the pool may not give B the block
// before A's work on it is done. MEMENTO_TEST_FREE_ON_WRONG_STREAM=1 frees the block on B instead
// (breaking the caller's side of the contract): B is then free to reuse it at once, and the test
// should fail.
TEST_F(CudaStreams, StreamOrderedAllocationDoesNotHandABusyBlockToAnotherStream) {
  constexpr size_t kBytes = size_t{64} << 20;
  constexpr int64_t kN = 4096;
  const bool wrong_stream = std::getenv("MEMENTO_TEST_FREE_ON_WRONG_STREAM") != nullptr;
  auto* pool = cuda::caching_device_resource(0);
  const Tensor a = random_gpu(Shape{kN, kN}, DType::kBF16, 4);
  const Tensor c = Tensor::empty(Shape{kN, kN}, DType::kBF16, kGpu);
  ops::matmul(a, false, a, false, c);
  synchronize(kGpu);
  Stream first(kGpu), second(kGpu);
  const size_t in_use = pool->bytes_in_use();

  void* p = pool->allocate(kBytes, first);
  EXPECT_EQ(pool->bytes_in_use(), in_use + kBytes);
  for (int i = 0; i < 40; ++i)
    ops::cuda::matmul(a, false, a, false, c, 1.0, 0.0, cuda::native(first));
  CUDA_CHECK(cudaMemsetAsync(p, 0xAB, kBytes, cuda::native(first)));  // A's late write
  pool->deallocate(p, kBytes, wrong_stream ? second.view() : first.view());
  void* q = pool->allocate(kBytes, second);
  CUDA_CHECK(cudaMemsetAsync(q, 0xCD, kBytes, cuda::native(second)));
  first.synchronize();
  second.synchronize();
  std::vector<unsigned char> host(kBytes);
  CUDA_CHECK(cudaMemcpy(host.data(), q, kBytes, cudaMemcpyDeviceToHost));
  const auto clobbered =
      std::count_if(host.begin(), host.end(), [](unsigned char x) { return x != 0xCD; });
  std::printf("[info] stream-ordered pool: block %s to the second stream; %zd bytes clobbered%s\n",
              q == p ? "reused" : "not reused", static_cast<std::ptrdiff_t>(clobbered),
              wrong_stream ? " (freed on the wrong stream, on purpose)" : "");
  EXPECT_EQ(clobbered, 0) << "the second stream got a block the first was still writing";
  pool->deallocate(q, kBytes, second);
  second.synchronize();
  EXPECT_EQ(pool->bytes_in_use(), in_use);
}

}  // namespace
}  // namespace memento::testing
