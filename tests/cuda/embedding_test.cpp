// Parity of the CUDA embedding with the CPU op over a grid of shapes, in bf16 and fp32: the
// gather, the deterministic scatter-add with repeated ids, and the id check.
#include "core/cuda/embedding.h"

#include <gtest/gtest.h>

#include <random>
#include <vector>

#include "core/ops/embedding.h"
#include "tests/cuda/cuda_testing.h"
#include "tests/testing/expect_error.h"

namespace memento::testing {
namespace {

struct Case {
  int64_t B, T, V, C;
  DType dtype;
};

std::string label(const char* op, const Case& c) {
  return std::string(op) + "/" + std::string(dtype_name(c.dtype)) + Shape{c.B, c.T, c.V, c.C}.str();
}

// Small vocabularies against many positions repeat ids (V = 1: every position is the same id).
std::vector<Case> grid() {
  std::vector<Case> cases;
  for (DType dtype : {DType::kF32, DType::kBF16})
    for (const Case& c :
         {Case{1, 1, 1, 1, dtype}, Case{2, 3, 10, 33, dtype}, Case{1, 5, 7, 3, dtype},
          Case{3, 17, 1001, 33, dtype}, Case{4, 64, 2048, 192, dtype},
          Case{8, 128, 32000, 768, dtype}, Case{2, 50, 50, 768, dtype},
          Case{4, 1024, 1, 192, dtype}, Case{8, 512, 13, 130, dtype}})
      cases.push_back(c);
  return cases;
}

// Token ids on the CPU and on the GPU, uniform in [0, V).
struct Tokens {
  Tensor cpu;  // (B, T) i32
  Tensor gpu;  // (B, T) i32
};

Tokens tokens_from(const std::vector<int32_t>& ids, int64_t B, int64_t T) {
  Tokens t{Tensor::empty(Shape{B, T}, DType::kI32), Tensor::empty(Shape{B, T}, DType::kI32, kGpu)};
  std::copy(ids.begin(), ids.end(), t.cpu.data<int32_t>());
  copy(t.cpu, t.gpu);
  return t;
}

Tokens random_tokens(int64_t B, int64_t T, int64_t V, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int32_t> id(0, static_cast<int32_t>(V - 1));
  std::vector<int32_t> ids(static_cast<size_t>(B * T));
  for (int32_t& i : ids) i = id(rng);
  return tokens_from(ids, B, T);
}

class CudaEmbedding : public CudaTest {};

TEST_F(CudaEmbedding, ForwardMatchesCpu) {
  uint64_t seed = 1;
  for (const Case& c : grid()) {
    const Tokens tokens = random_tokens(c.B, c.T, c.V, seed++);
    const Tensor w = random_gpu(Shape{c.V, c.C}, c.dtype, seed++);  // (V, C)
    const Tensor out = Tensor::empty(Shape{c.B, c.T, c.C}, c.dtype, kGpu);
    ops::cuda::embedding_forward(tokens.gpu, w, out);

    const Tensor out_ref = Tensor::empty(Shape{c.B, c.T, c.C}, DType::kF64);
    ops::embedding_forward(tokens.cpu, to_cpu_f64(w), out_ref);
    // A gather copies bits: anything but an exact match is a wrong row.
    expect_parity(label("embedding_forward.out", c), out, out_ref, c.dtype);
    EXPECT_EQ(values(out), values(out_ref)) << label("embedding_forward.out", c);
  }
}

TEST_F(CudaEmbedding, BackwardMatchesCpuAndAccumulates) {
  uint64_t seed = 100;
  for (const Case& c : grid()) {
    const Tokens tokens = random_tokens(c.B, c.T, c.V, seed++);
    const Tensor dout = random_gpu(Shape{c.B, c.T, c.C}, c.dtype, seed++);  // (B, T, C)
    const Tensor dw = random_gpu(Shape{c.V, c.C}, DType::kF32, seed++);     // (V, C), accumulated
    const Tensor dw_ref = to_cpu_f64(dw);
    ops::embedding_backward(tokens.cpu, to_cpu_f64(dout), dw_ref);
    ops::cuda::embedding_backward(tokens.gpu, dout, dw);
    // dweight is fp32 and sums exactly the values the CPU sees.
    expect_parity(label("embedding_backward.dweight", c), dw, dw_ref, DType::kF32);
  }
}

TEST_F(CudaEmbedding, BackwardIsBitIdenticalAcrossRuns) {
  // Few ids over many positions: long per-id sums, where a change of order would show.
  const int64_t B = 8, T = 1024, V = 37, C = 768;
  const Tokens tokens = random_tokens(B, T, V, 5);
  const Tensor dout = random_gpu(Shape{B, T, C}, DType::kBF16, 6);
  std::vector<double> first;
  for (int run = 0; run < 3; ++run) {
    const Tensor dw = Tensor::zeros(Shape{V, C}, DType::kF32, kGpu);
    ops::cuda::embedding_backward(tokens.gpu, dout, dw);
    if (run == 0)
      first = values(dw);
    else
      EXPECT_EQ(values(dw), first) << "run " << run;
  }
}

TEST_F(CudaEmbedding, BadIdIsADataErrorNamingThePosition) {
  const int64_t B = 2, T = 4, V = 10, C = 8;
  const Tensor w = random_gpu(Shape{V, C}, DType::kBF16, 1);
  const Tensor out = Tensor::empty(Shape{B, T, C}, DType::kBF16, kGpu);
  const Tensor dout = random_gpu(Shape{B, T, C}, DType::kBF16, 2);
  const Tensor dw = Tensor::zeros(Shape{V, C}, DType::kF32, kGpu);
  std::vector<int32_t> ids = {0, 1, 2, 3, 4, 5, 6, 7};
  ids[6] = static_cast<int32_t>(V);  // (b, t) = (1, 2)
  const Tokens too_big = tokens_from(ids, B, T);
  expect_error_naming<DataError>([&] { ops::cuda::embedding_forward(too_big.gpu, w, out); },
                                 "token id 10 at (b, t) = (1, 2)");
  expect_error_naming<DataError>([&] { ops::cuda::embedding_backward(too_big.gpu, dout, dw); },
                                 "token id 10 at (b, t) = (1, 2)");
  ids[6] = 6;
  ids[3] = -1;  // (b, t) = (0, 3)
  const Tokens negative = tokens_from(ids, B, T);
  expect_error_naming<DataError>([&] { ops::cuda::embedding_forward(negative.gpu, w, out); },
                                 "token id -1 at (b, t) = (0, 3)");
  expect_error_naming<DataError>([&] { ops::cuda::embedding_backward(negative.gpu, dout, dw); },
                                 "token id -1 at (b, t) = (0, 3)");
  // Nothing was added to the gradient.
  EXPECT_EQ(values(dw), std::vector<double>(V * C, 0.0));
}

TEST_F(CudaEmbedding, RejectsMismatchedShapesAndDtypes) {
  const Tokens tokens = random_tokens(2, 3, 10, 1);
  const Tensor w = random_gpu(Shape{10, 8}, DType::kBF16, 2);
  const Tensor out = Tensor::empty(Shape{2, 3, 8}, DType::kBF16, kGpu);
  expect_shape_error(
      [&] {
        ops::cuda::embedding_forward(tokens.gpu, w,
                                     Tensor::empty(Shape{2, 3, 7}, DType::kBF16, kGpu));
      },
      "cuda::embedding_forward: out");
  expect_shape_error(
      [&] {
        ops::cuda::embedding_forward(tokens.gpu, w,
                                     Tensor::empty(Shape{2, 3, 8}, DType::kF32, kGpu));
      },
      "cuda::embedding_forward: out");
  expect_shape_error([&] { ops::cuda::embedding_forward(tokens.cpu, w, out); },
                     "cuda::embedding_forward");
  // The weight gradient is fp32 whatever the activations are.
  expect_shape_error(
      [&] {
        ops::cuda::embedding_backward(tokens.gpu, out,
                                      Tensor::zeros(Shape{10, 8}, DType::kBF16, kGpu));
      },
      "cuda::embedding_backward: dweight");
  expect_shape_error(
      [&] {
        ops::cuda::embedding_backward(tokens.gpu, out,
                                      Tensor::zeros(Shape{10, 9}, DType::kF32, kGpu));
      },
      "cuda::embedding_backward: dout");
}

}  // namespace
}  // namespace memento::testing
