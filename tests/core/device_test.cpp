// The start-up check that a build's CUDA kernels can run on the GPU: compute capability 8.0 or
// newer, and an entry of CMAKE_CUDA_ARCHITECTURES that CUDA loads on it, with the message that
// says how to rebuild. Plain C++ (the runtime probe itself needs a GPU): runs in every build.
#include "core/device.h"

#include <gtest/gtest.h>

#include <string>

namespace memento {
namespace {

using detail::cuda_arch_problem;

const char* const kA100 = "NVIDIA A100-SXM4-80GB";
const char* const kH100 = "NVIDIA H100 80GB HBM3";

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

TEST(CudaArchTest, Sm90BuildOnAnA100SaysHowToRebuild) {
  const std::string message = cuda_arch_problem(1, kA100, 8, 0, "90");
  EXPECT_TRUE(contains(message, "this build has kernels for sm_90 (CMAKE_CUDA_ARCHITECTURES=90)"))
      << message;
  EXPECT_TRUE(contains(message, "GPU 1 (NVIDIA A100-SXM4-80GB) is sm_80")) << message;
  EXPECT_TRUE(contains(message, "rebuild with -DCMAKE_CUDA_ARCHITECTURES=80")) << message;
  EXPECT_TRUE(contains(message, "\"90;80\" to keep the others")) << message;
}

TEST(CudaArchTest, AnEntryForTheGpuRuns) {
  EXPECT_EQ(cuda_arch_problem(0, kH100, 9, 0, "80;90"), "");
  EXPECT_EQ(cuda_arch_problem(0, kA100, 8, 0, "80;90"), "");
  EXPECT_EQ(cuda_arch_problem(0, kH100, 9, 0, "90"), "");
  EXPECT_EQ(cuda_arch_problem(0, kH100, 9, 0, "90-real"), "");
  EXPECT_EQ(cuda_arch_problem(0, kH100, 9, 0, "90a"), "");
  EXPECT_EQ(cuda_arch_problem(0, kH100, 9, 0, " 86 ; 90-virtual "), "");
}

TEST(CudaArchTest, PtxOfALowerCapabilityRunsThroughTheJit) {
  // A plain entry embeds PTX: 80 runs on sm_90 and on sm_100; "-virtual" is PTX alone.
  EXPECT_EQ(cuda_arch_problem(0, kH100, 9, 0, "80"), "");
  EXPECT_EQ(cuda_arch_problem(0, "NVIDIA B200", 10, 0, "90"), "");
  EXPECT_EQ(cuda_arch_problem(0, kH100, 9, 0, "80-virtual"), "");
}

TEST(CudaArchTest, SassRunsOnlyOnItsMajorWithNoLowerMinor) {
  // SASS alone ("-real"): 8.0 code runs on 8.6, not on 9.0; 8.6 code not on 8.0.
  EXPECT_EQ(cuda_arch_problem(0, "NVIDIA RTX A6000", 8, 6, "80-real"), "");
  EXPECT_TRUE(contains(cuda_arch_problem(0, kH100, 9, 0, "80-real"), "is sm_90"));
  EXPECT_TRUE(contains(cuda_arch_problem(0, kA100, 8, 0, "86-real"), "sm_86"));
  // PTX never runs on a lower capability either.
  EXPECT_TRUE(contains(cuda_arch_problem(0, kA100, 8, 0, "86"), "-DCMAKE_CUDA_ARCHITECTURES=80"));
}

TEST(CudaArchTest, ArchSpecificRunsOnlyOnItsGpuAndFamilySpecificOnItsFamily) {
  EXPECT_TRUE(contains(cuda_arch_problem(0, "NVIDIA B200", 10, 0, "90a"), "sm_90a"));
  EXPECT_TRUE(contains(cuda_arch_problem(0, kA100, 8, 0, "90a"), "is sm_80"));
  EXPECT_EQ(cuda_arch_problem(0, "NVIDIA B300", 10, 3, "100f"), "");
  EXPECT_TRUE(contains(cuda_arch_problem(0, "NVIDIA RTX PRO 6000", 12, 0, "100f"), "is sm_120"));
}

TEST(CudaArchTest, NamesEveryEntryAsCudaWouldLoadIt) {
  const std::string message = cuda_arch_problem(0, kA100, 8, 0, "90-real;90a;100-virtual");
  EXPECT_TRUE(contains(message,
                       "kernels for sm_90, sm_90a, compute_100 (PTX only) "
                       "(CMAKE_CUDA_ARCHITECTURES=90-real;90a;100-virtual)"))
      << message;
}

TEST(CudaArchTest, BelowCapability8IsRefusedWhateverTheBuild) {
  for (const char* archs : {"90", "75", "all"}) {
    const std::string message = cuda_arch_problem(2, "Tesla T4", 7, 5, archs);
    EXPECT_TRUE(contains(message, "GPU 2 (Tesla T4) has compute capability 7.5")) << message;
    EXPECT_TRUE(contains(message, "need 8.0 or newer")) << message;
  }
}

TEST(CudaArchTest, ListsItCannotJudgeAreLeftToTheRuntimeProbe) {
  EXPECT_EQ(cuda_arch_problem(0, kA100, 8, 0, "native"), "");
  EXPECT_EQ(cuda_arch_problem(0, kA100, 8, 0, "all-major"), "");
  EXPECT_EQ(cuda_arch_problem(0, kA100, 8, 0, "90;all"), "");
  EXPECT_EQ(cuda_arch_problem(0, kA100, 8, 0, ""), "");
}

}  // namespace
}  // namespace memento
