// The CUDA memory resources, tensor copies between host and device, and the CUDA handles.
#include <gtest/gtest.h>

#include "core/cuda/check.h"
#include "core/cuda/device_resource.h"
#include "tests/cuda/cuda_testing.h"

namespace memento::testing {
namespace {

// Runs everywhere: asking must never abort, GPU or not.
TEST(CudaAvailable, AnswersWithoutAborting) {
  const bool available = cuda::cuda_available();
  EXPECT_EQ(available, cuda::cuda_device_count() > 0);
  EXPECT_EQ(cuda::cuda_available(), available);
}

class CudaMemory : public CudaTest {};

TEST_F(CudaMemory, DefaultResourceIsTheCachingPool) {
  MemoryResource* r = default_resource(kGpu);
  EXPECT_EQ(r, cuda::caching_device_resource(0));
  EXPECT_EQ(r->device(), kGpu);
  auto* pool = cuda::caching_device_resource(0);
  const size_t before = pool->bytes_in_use();
  {
    const Tensor t = Tensor::empty(Shape{1024}, DType::kF32, kGpu);
    EXPECT_EQ(pool->bytes_in_use(), before + 4096);
    EXPECT_GE(pool->peak_bytes(), before + 4096);
  }
  EXPECT_EQ(pool->bytes_in_use(), before);
}

TEST_F(CudaMemory, HugeRequestThrowsOutOfMemory) {
  EXPECT_THROW(Tensor::empty(Shape{int64_t{1} << 50}, DType::kF32, kGpu), OutOfMemoryError);
}

TEST_F(CudaMemory, CopiesRoundTripAndConvert) {
  const Tensor host = Tensor::empty(Shape{3, 1000}, DType::kF32);
  for (int64_t i = 0; i < host.numel(); ++i) host.data<float>()[i] = 0.001f * static_cast<float>(i);
  const Tensor dev = Tensor::empty(host.shape(), DType::kF32, kGpu);
  copy(host, dev);
  const Tensor dev2 = Tensor::empty(host.shape(), DType::kF32, kGpu);
  copy(dev, dev2);  // device to device
  const Tensor back = Tensor::zeros(host.shape(), DType::kF32);
  copy(dev2, back);
  EXPECT_EQ(values(back), values(host));

  const Tensor dev_bf16 = Tensor::empty(host.shape(), DType::kBF16, kGpu);
  copy(host, dev_bf16);  // converts on the host
  const Tensor cpu_bf16 = Tensor::empty(host.shape(), DType::kBF16);
  copy(host, cpu_bf16);
  EXPECT_EQ(values(dev_bf16), values(cpu_bf16));

  const Tensor z = Tensor::zeros(Shape{77}, DType::kBF16, kGpu);
  for (double x : values(z)) EXPECT_EQ(x, 0.0);
}

TEST_F(CudaMemory, PinnedHostTensorsAreCpuTensors) {
  const Tensor t =
      Tensor::zeros(Shape{256}, DType::kF32, Device::cpu(), cuda::pinned_host_resource());
  t.data<float>()[5] = 2.f;
  const Tensor dev = Tensor::empty(Shape{256}, DType::kF32, kGpu);
  copy(t, dev);
  EXPECT_EQ(values(dev)[5], 2.0);
}

TEST_F(CudaMemory, StreamsEventsAndGuardsWork) {
  cuda::CudaStream stream;
  cuda::CudaStream moved = std::move(stream);
  EXPECT_EQ(stream.get(), nullptr);  // NOLINT(bugprone-use-after-move): moved-from is empty
  cuda::CudaEvent start, stop;
  start.record(moved.get());
  stop.record(moved.get());
  stop.synchronize();
  EXPECT_GE(stop.elapsed_ms_since(start), 0.f);
  { cuda::DeviceGuard guard(0); }
  int device = -1;
  CUDA_CHECK(cudaGetDevice(&device));
  EXPECT_EQ(device, 0);
}

}  // namespace
}  // namespace memento::testing
