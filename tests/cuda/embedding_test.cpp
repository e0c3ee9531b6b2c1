// Parity of the CUDA embedding with the CPU op over a grid of shapes, in bf16 and fp32: the
// gather, the deterministic scatter-add with repeated ids (bit for bit against a serial fp32 sum),
// the forward's id check and the backward's skipping of ids it does not check.
#include "core/cuda/embedding.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <limits>
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

std::vector<int32_t> random_ids(int64_t N, int64_t V, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int32_t> id(0, static_cast<int32_t>(V - 1));
  std::vector<int32_t> ids(static_cast<size_t>(N));
  for (int32_t& i : ids) i = id(rng);
  return ids;
}

Tokens random_tokens(int64_t B, int64_t T, int64_t V, uint64_t seed) {
  return tokens_from(random_ids(B * T, V, seed), B, T);
}

// The backward's contract, serially on the host: per id, in fp32, starting from dweight, the dout
// rows added in ascending position order; ids outside [0, V) skipped. dout holds values a float
// represents exactly (fp32 or bf16), so this is the exact result the GPU must give.
std::vector<double> serial_backward_f32(const std::vector<int32_t>& ids, const TensorView& dout,
                                        const TensorView& dweight) {
  const std::vector<double> d = values(dout);  // (N, C)
  std::vector<double> dw = values(dweight);    // (V, C)
  const int64_t V = dweight.size(0), C = dweight.size(1);
  for (size_t n = 0; n < ids.size(); ++n) {
    if (ids[n] < 0 || ids[n] >= V) continue;
    for (int64_t c = 0; c < C; ++c) {
      double& acc = dw[static_cast<size_t>(ids[n] * C + c)];
      acc = static_cast<float>(static_cast<float>(acc) +
                               static_cast<float>(d[n * static_cast<size_t>(C) + c]));
    }
  }
  return dw;
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

TEST_F(CudaEmbedding, BackwardAddsInPositionOrderBitForBit) {
  struct IdCase {
    const char* name;
    int64_t B, T, V;
    std::vector<int32_t> ids;  // (B * T)
  };
  std::vector<IdCase> id_cases;
  id_cases.push_back({"one id everywhere", 4, 512, 1000, std::vector<int32_t>(4 * 512, 7)});
  {
    std::vector<int32_t> ids = random_ids(4 * 512, 3, 1);  // three ids far apart
    for (int32_t& id : ids) id = id == 0 ? 0 : id == 1 ? 500 : 999;
    id_cases.push_back({"three ids", 4, 512, 1000, ids});
  }
  {
    // V - 1 = 65535 needs all 16 sorted bits; 0, 255, 256 and 32768 sit on digit boundaries.
    std::vector<int32_t> ids = random_ids(4 * 1024, 65536, 2);
    for (const size_t n : {5, 100, 4000}) ids[n] = 65535;
    ids[7] = 0;
    ids[8] = 255;
    ids[9] = 256;
    ids[10] = 32768;
    id_cases.push_back({"V = 65536", 4, 1024, 65536, ids});
  }
  id_cases.push_back({"V = 1", 2, 300, 1, std::vector<int32_t>(2 * 300, 0)});
  id_cases.push_back({"V = 1, one token", 1, 1, 1, std::vector<int32_t>{0}});
  id_cases.push_back({"random", 4, 256, 32000, random_ids(4 * 256, 32000, 3)});
  uint64_t seed = 200;
  for (const IdCase& ic : id_cases)
    for (DType dtype : {DType::kF32, DType::kBF16})
      for (const int64_t C : {int64_t{8}, int64_t{130}, int64_t{768}}) {  // packed, scalar, packed
        if (ic.V * C > (int64_t{1} << 24)) continue;                      // keep dweight small
        const std::string what = std::string(ic.name) + "/" + std::string(dtype_name(dtype)) +
                                 Shape{ic.B, ic.T, ic.V, C}.str();
        const Tokens tokens = tokens_from(ic.ids, ic.B, ic.T);
        const Tensor dout = random_gpu(Shape{ic.B, ic.T, C}, dtype, seed++);  // (B, T, C)
        const Tensor dw = random_gpu(Shape{ic.V, C}, DType::kF32, seed++);    // (V, C)
        const std::vector<double> expected = serial_backward_f32(ic.ids, dout, dw);
        ops::cuda::embedding_backward(tokens.gpu, dout, dw);
        EXPECT_EQ(values(dw), expected) << what;
      }
}

TEST_F(CudaEmbedding, BackwardMatchesTheCpuOpBitForBitInFp32) {
  // In fp32 the CPU op makes the same additions in the same order: equal, not just close.
  uint64_t seed = 300;
  for (const Case& c : grid()) {
    if (c.dtype != DType::kF32) continue;
    const Tokens tokens = random_tokens(c.B, c.T, c.V, seed++);
    const Tensor dout = random_gpu(Shape{c.B, c.T, c.C}, DType::kF32, seed++);  // (B, T, C)
    const Tensor dw = random_gpu(Shape{c.V, c.C}, DType::kF32, seed++);         // (V, C)
    const Tensor dw_ref = Tensor::empty(Shape{c.V, c.C}, DType::kF32);
    const Tensor dout_cpu = Tensor::empty(Shape{c.B, c.T, c.C}, DType::kF32);
    copy(dw, dw_ref);
    copy(dout, dout_cpu);
    ops::embedding_backward(tokens.cpu, dout_cpu, dw_ref);
    ops::cuda::embedding_backward(tokens.gpu, dout, dw);
    EXPECT_EQ(values(dw), values(dw_ref)) << label("embedding_backward.dweight", c);
  }
}

TEST_F(CudaEmbedding, BackwardIsBitIdenticalAcrossRunsAtTrainingSize) {
  const int64_t B = 16, T = 1024, V = 32000, C = 768;
  const Tokens tokens = random_tokens(B, T, V, 7);
  const Tensor dout = random_gpu(Shape{B, T, C}, DType::kBF16, 8);  // (B, T, C)
  std::vector<Tensor> results;                                      // (V, C) each, on the host
  for (int run = 0; run < 2; ++run) {
    const Tensor dw = Tensor::zeros(Shape{V, C}, DType::kF32, kGpu);
    ops::cuda::embedding_backward(tokens.gpu, dout, dw);
    results.push_back(Tensor::empty(Shape{V, C}, DType::kF32));
    copy(dw, results.back());
  }
  EXPECT_EQ(std::memcmp(results[0].data<float>(), results[1].data<float>(), results[0].bytes()), 0);
}

TEST_F(CudaEmbedding, ForwardBadIdIsADataErrorNamingThePosition) {
  const int64_t B = 2, T = 4, V = 10, C = 8;
  const Tensor w = random_gpu(Shape{V, C}, DType::kBF16, 1);
  const Tensor out = Tensor::empty(Shape{B, T, C}, DType::kBF16, kGpu);
  std::vector<int32_t> ids = {0, 1, 2, 3, 4, 5, 6, 7};
  ids[6] = static_cast<int32_t>(V);  // (b, t) = (1, 2)
  const Tokens too_big = tokens_from(ids, B, T);
  expect_error_naming<DataError>([&] { ops::cuda::embedding_forward(too_big.gpu, w, out); },
                                 "token id 10 at (b, t) = (1, 2)");
  ids[6] = 6;
  ids[3] = -1;  // (b, t) = (0, 3)
  const Tokens negative = tokens_from(ids, B, T);
  expect_error_naming<DataError>([&] { ops::cuda::embedding_forward(negative.gpu, w, out); },
                                 "token id -1 at (b, t) = (0, 3)");
}

TEST_F(CudaEmbedding, BackwardSkipsIdsOutsideTheVocabulary) {
  // The backward trusts the ids the forward checked; a bad one must still never be written, nor
  // disturb the other ids' sums. 19 and 25 agree with 3 and 9 in the 4 sorted bits of V = 10.
  const int64_t B = 4, T = 64, V = 10;
  std::vector<int32_t> ids = random_ids(B * T, V, 9);
  ids[0] = static_cast<int32_t>(V);
  ids[5] = -1;
  ids[17] = 19;
  ids[18] = 25;
  ids[100] = std::numeric_limits<int32_t>::max();
  ids[B * T - 1] = std::numeric_limits<int32_t>::min();
  const Tokens tokens = tokens_from(ids, B, T);
  for (const int64_t C : {int64_t{8}, int64_t{130}}) {
    const Tensor dout = random_gpu(Shape{B, T, C}, DType::kBF16, 10);  // (B, T, C)
    // dweight between two guard rows of zeros: a write one row out of bounds would land there.
    const Tensor guarded = Tensor::zeros(Shape{V + 2, C}, DType::kF32, kGpu);  // (V + 2, C)
    const TensorView dw = guarded.view().slice(1, V + 1);                      // (V, C)
    const std::vector<double> expected = serial_backward_f32(ids, dout, dw);
    ops::cuda::embedding_backward(tokens.gpu, dout, dw);
    EXPECT_EQ(values(dw), expected) << "C = " << C;
    EXPECT_EQ(values(guarded.view().slice(0, 1)), std::vector<double>(C, 0.0)) << "C = " << C;
    EXPECT_EQ(values(guarded.view().slice(V + 1, V + 2)), std::vector<double>(C, 0.0))
        << "C = " << C;
  }
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
