// Parity of the CUDA fused softmax cross-entropy with the CPU op over a grid of shapes, in bf16 and
// fp32: the loss sum and count, the gradient (separate, in place and misaligned), ignored rows,
// determinism and the target check.
#include "core/cuda/cross_entropy.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <random>
#include <vector>

#include "tests/cuda/cuda_testing.h"
#include "tests/testing/expect_error.h"

namespace memento::testing {
namespace {

constexpr double kGradScale = 0.37;

struct Case {
  int64_t N, V;
  DType dtype;
  float std;  // of the logits: 20 makes rows nearly one-hot
};

std::string label(const char* op, const Case& c) {
  return std::string(op) + "/" + std::string(dtype_name(c.dtype)) + Shape{c.N, c.V}.str();
}

std::vector<Case> grid() {
  std::vector<Case> cases;
  for (DType dtype : {DType::kF32, DType::kBF16})
    for (const Case& c :
         {Case{1, 1, dtype, 1.f}, Case{3, 5, dtype, 2.f}, Case{7, 1001, dtype, 2.f},
          Case{64, 2048, dtype, 2.f}, Case{4096, 2048, dtype, 3.f}, Case{300, 32000, dtype, 2.f},
          Case{9, 50257, dtype, 1.f}, Case{33, 4099, dtype, 20.f}})
      cases.push_back(c);
  return cases;
}

// Targets on the CPU and on the GPU: uniform in [0, V), with about one row in `ignore_every`
// set to a negative value (ignored); 0 means none.
struct Targets {
  Tensor cpu;  // (N) i32
  Tensor gpu;  // (N) i32
};

Targets targets_from(const std::vector<int32_t>& t) {
  const auto N = static_cast<int64_t>(t.size());
  Targets out{Tensor::empty(Shape{N}, DType::kI32), Tensor::empty(Shape{N}, DType::kI32, kGpu)};
  std::copy(t.begin(), t.end(), out.cpu.data<int32_t>());
  copy(out.cpu, out.gpu);
  return out;
}

Targets random_targets(int64_t N, int64_t V, uint64_t seed, int ignore_every = 7) {
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int32_t> target(0, static_cast<int32_t>(V - 1));
  std::vector<int32_t> t(static_cast<size_t>(N));
  for (size_t n = 0; n < t.size(); ++n)
    t[n] = ignore_every > 0 && n % ignore_every == 3 ? (n % 2 ? -100 : -1) : target(rng);
  return targets_from(t);
}

struct Reference {
  ops::CrossEntropyResult result;
  Tensor dlogits;  // (N, V) f64
};

Reference reference(const Tensor& logits, const Targets& targets) {
  Reference r{{}, Tensor::empty(logits.shape(), DType::kF64)};
  r.result = ops::cross_entropy(to_cpu_f64(logits), targets.cpu, r.dlogits, kGradScale);
  return r;
}

// The loss is fp32 arithmetic on exactly the values the CPU sees, whatever the logits dtype.
void expect_loss(const std::string& what, const ops::CrossEntropyResult& got,
                 const ops::CrossEntropyResult& ref) {
  const double err = relative_max_error({got.loss_sum}, {ref.loss_sum});
  std::printf("[maxerr] %s %.3e\n", what.c_str(), err);
  EXPECT_LE(err, parity_tolerance(DType::kF32)) << what;
  EXPECT_EQ(got.count, ref.count) << what;
}

class CudaCrossEntropy : public CudaTest {};

TEST_F(CudaCrossEntropy, LossAndGradientMatchCpu) {
  uint64_t seed = 1;
  for (const Case& c : grid()) {
    const Tensor logits = random_gpu(Shape{c.N, c.V}, c.dtype, seed++, 0.f, c.std);  // (N, V)
    const Targets targets = random_targets(c.N, c.V, seed++);
    const Reference ref = reference(logits, targets);

    const Tensor dlogits = Tensor::empty(Shape{c.N, c.V}, c.dtype, kGpu);  // (N, V)
    const ops::CrossEntropyResult got =
        ops::cuda::cross_entropy(logits, targets.gpu, dlogits, kGradScale);
    expect_loss(label("cross_entropy.loss", c), got, ref.result);
    expect_parity(label("cross_entropy.dlogits", c), dlogits, ref.dlogits, c.dtype);

    // Without a gradient: the same loss, bit for bit.
    const ops::CrossEntropyResult loss_only =
        ops::cuda::cross_entropy(logits, targets.gpu, TensorView(), kGradScale);
    EXPECT_EQ(loss_only.loss_sum, got.loss_sum) << label("cross_entropy.loss_only", c);
    EXPECT_EQ(loss_only.count, got.count);
  }
}

TEST_F(CudaCrossEntropy, InPlaceAndMisalignedGradientsMatchSeparateOnes) {
  for (DType dtype : {DType::kF32, DType::kBF16}) {
    for (const int64_t V : {int64_t{2048}, int64_t{1001}}) {
      const int64_t N = 50;
      const Tensor logits = random_gpu(Shape{N, V}, dtype, 11, 0.f, 2.f);
      const Targets targets = random_targets(N, V, 12);
      const Tensor separate = Tensor::empty(Shape{N, V}, dtype, kGpu);
      const ops::CrossEntropyResult a =
          ops::cuda::cross_entropy(logits, targets.gpu, separate, kGradScale);
      // dlogits one element past a 16-byte boundary: its packs never line up with the logits'.
      const Tensor big = Tensor::empty(Shape{N * V + 1}, dtype, kGpu);
      const TensorView shifted = big.view().flat_range(1, Shape{N, V});
      const ops::CrossEntropyResult b =
          ops::cuda::cross_entropy(logits, targets.gpu, shifted, kGradScale);
      const ops::CrossEntropyResult c =
          ops::cuda::cross_entropy(logits, targets.gpu, logits, kGradScale);  // in place
      const std::string what = label("cross_entropy.aliasing", {N, V, dtype, 2.f});
      EXPECT_EQ(values(shifted), values(separate)) << what;
      EXPECT_EQ(values(logits), values(separate)) << what;
      EXPECT_EQ(b.loss_sum, a.loss_sum) << what;
      EXPECT_EQ(c.loss_sum, a.loss_sum) << what;
    }
  }
}

TEST_F(CudaCrossEntropy, IgnoredRowsCountNothingAndGetZeroGradients) {
  const int64_t N = 8, V = 300;
  const Tensor logits = random_gpu(Shape{N, V}, DType::kBF16, 21, 0.f, 2.f);
  const Tensor dlogits = random_gpu(Shape{N, V}, DType::kBF16, 22);  // overwritten
  const Targets none = targets_from(std::vector<int32_t>(N, -100));
  const ops::CrossEntropyResult r = ops::cuda::cross_entropy(logits, none.gpu, dlogits, 1.0);
  EXPECT_EQ(r.count, 0);
  EXPECT_EQ(r.loss_sum, 0.0);
  EXPECT_EQ(values(dlogits), std::vector<double>(N * V, 0.0));

  std::vector<int32_t> t(N, -1);
  t[2] = 17;
  t[5] = 299;
  const Targets two = targets_from(t);
  const Reference ref = reference(logits, two);
  const ops::CrossEntropyResult got =
      ops::cuda::cross_entropy(logits, two.gpu, dlogits, kGradScale);
  EXPECT_EQ(got.count, 2);
  expect_loss("cross_entropy.loss.ignored/bf16" + Shape{N, V}.str(), got, ref.result);
  expect_parity("cross_entropy.dlogits.ignored/bf16" + Shape{N, V}.str(), dlogits, ref.dlogits,
                DType::kBF16);
}

TEST_F(CudaCrossEntropy, LossIsBitIdenticalAcrossRuns) {
  const int64_t N = 4096, V = 2048;
  const Tensor logits = random_gpu(Shape{N, V}, DType::kBF16, 31, 0.f, 2.f);
  const Targets targets = random_targets(N, V, 32);
  const Tensor dlogits = Tensor::empty(Shape{N, V}, DType::kBF16, kGpu);
  const ops::CrossEntropyResult first =
      ops::cuda::cross_entropy(logits, targets.gpu, dlogits, kGradScale);
  const std::vector<double> first_grad = values(dlogits);
  for (int run = 1; run < 3; ++run) {
    const ops::CrossEntropyResult again =
        ops::cuda::cross_entropy(logits, targets.gpu, dlogits, kGradScale);
    EXPECT_EQ(again.loss_sum, first.loss_sum) << "run " << run;
    EXPECT_EQ(values(dlogits), first_grad) << "run " << run;
  }
}

TEST_F(CudaCrossEntropy, TargetOutsideTheVocabularyIsADataErrorNamingTheRow) {
  const int64_t N = 8, V = 100;
  const Tensor logits = random_gpu(Shape{N, V}, DType::kBF16, 41);
  std::vector<int32_t> t(N, 1);
  t[5] = static_cast<int32_t>(V);
  t[6] = static_cast<int32_t>(V + 7);
  const Targets bad = targets_from(t);
  expect_error_naming<DataError>(
      [&] { ops::cuda::cross_entropy(logits, bad.gpu, TensorView(), 1.0); }, "target 100 at row 5");
  t[1] = 1000;
  const Targets earlier = targets_from(t);
  expect_error_naming<DataError>(
      [&] {
        ops::cuda::cross_entropy(logits, earlier.gpu,
                                 Tensor::empty(Shape{N, V}, DType::kBF16, kGpu), 1.0);
      },
      "target 1000 at row 1");
}

TEST_F(CudaCrossEntropy, RejectsMismatchedShapesAndDtypes) {
  const Tensor logits = random_gpu(Shape{4, 10}, DType::kBF16, 1);
  const Targets targets = random_targets(4, 10, 2, 0);
  expect_shape_error(
      [&] {
        ops::cuda::cross_entropy(logits, targets.gpu,
                                 Tensor::empty(Shape{4, 10}, DType::kF32, kGpu), 1.0);
      },
      "cuda::cross_entropy: dlogits");
  expect_shape_error(
      [&] {
        ops::cuda::cross_entropy(logits, targets.gpu,
                                 Tensor::empty(Shape{4, 11}, DType::kBF16, kGpu), 1.0);
      },
      "cuda::cross_entropy: dlogits");
  expect_shape_error(
      [&] { ops::cuda::cross_entropy(logits, random_targets(5, 10, 3).gpu, TensorView(), 1.0); },
      "cuda::cross_entropy: targets");
  expect_shape_error([&] { ops::cuda::cross_entropy(logits, targets.cpu, TensorView(), 1.0); },
                     "cuda::cross_entropy");
  expect_shape_error(
      [&] {
        ops::cuda::cross_entropy(random_gpu(Shape{4, 10}, DType::kF64, 4), targets.gpu,
                                 TensorView(), 1.0);
      },
      "cuda::cross_entropy: logits");
}

}  // namespace
}  // namespace memento::testing
