// Parity of the CUDA causal attention (flash kernels for bf16 with HS 32/64/128, warp-per-row
// kernels otherwise) with the CPU op run in fp64, forward and backward, over a grid of shapes;
// bit-identical backward; shape errors; and a timing print at the benchmark's sizes.
#include "core/cuda/attention.h"

#include <gtest/gtest.h>

#include <cstdio>

#include "core/ops/attention.h"
#include "tests/cuda/cuda_testing.h"
#include "tests/testing/expect_error.h"

namespace memento::testing {
namespace {

struct Case {
  int64_t B, T, NH, NKV, HS;
  DType dtype;
  Shape q() const { return Shape{B, T, NH, HS}; }
  Shape kv() const { return Shape{B, T, NKV, HS}; }
  Shape lse() const { return Shape{B, NH, T}; }
};

std::string label(const char* what, const Case& c) {
  return std::string(what) + "/" + std::string(dtype_name(c.dtype)) + "/" +
         Shape{c.B, c.T, c.NH, c.NKV, c.HS}.str();
}

std::vector<Case> grid() {
  std::vector<Case> cases;
  // bf16: flash kernels for HS 32, 64, 128 (T not a multiple of the tiles, grouped and plain
  // heads, one row); warp-per-row kernels for HS 16, 96 and 256.
  for (const Case& c : std::initializer_list<Case>{{1, 1, 1, 1, 64, DType::kBF16},
                                                   {2, 37, 4, 2, 32, DType::kBF16},
                                                   {1, 128, 6, 2, 32, DType::kBF16},
                                                   {2, 200, 4, 4, 64, DType::kBF16},
                                                   {1, 257, 8, 2, 128, DType::kBF16},
                                                   {1, 300, 4, 1, 128, DType::kBF16},
                                                   {1, 64, 2, 1, 16, DType::kBF16},
                                                   {1, 90, 3, 3, 96, DType::kBF16},
                                                   {1, 70, 2, 2, 256, DType::kBF16},
                                                   {2, 1024, 12, 12, 64, DType::kBF16}})
    cases.push_back(c);
  // fp32: warp-per-row kernels.
  for (const Case& c : std::initializer_list<Case>{{1, 1, 1, 1, 64, DType::kF32},
                                                   {2, 37, 4, 2, 32, DType::kF32},
                                                   {1, 128, 6, 2, 64, DType::kF32},
                                                   {1, 64, 2, 1, 16, DType::kF32},
                                                   {1, 100, 2, 2, 256, DType::kF32}})
    cases.push_back(c);
  return cases;
}

struct Inputs {
  Tensor q, k, v, dout;  // (B, T, NH, HS), (B, T, NKV, HS) x 2, (B, T, NH, HS)
};

Inputs random_inputs(const Case& c, uint64_t seed) {
  return {random_gpu(c.q(), c.dtype, seed), random_gpu(c.kv(), c.dtype, seed + 1),
          random_gpu(c.kv(), c.dtype, seed + 2), random_gpu(c.q(), c.dtype, seed + 3)};
}

class CudaAttention : public CudaTest {};

TEST_F(CudaAttention, ForwardAndBackwardMatchCpu) {
  uint64_t seed = 1;
  for (const Case& c : grid()) {
    const Inputs in = random_inputs(c, seed);
    seed += 4;
    const Tensor out = Tensor::empty(c.q(), c.dtype, kGpu);        // (B, T, NH, HS)
    const Tensor lse = Tensor::empty(c.lse(), DType::kF32, kGpu);  // (B, NH, T)
    const Tensor dq = Tensor::empty(c.q(), c.dtype, kGpu);         // (B, T, NH, HS)
    const Tensor dk = Tensor::empty(c.kv(), c.dtype, kGpu);        // (B, T, NKV, HS)
    const Tensor dv = Tensor::empty(c.kv(), c.dtype, kGpu);        // (B, T, NKV, HS)
    ops::cuda::attention_forward(in.q, in.k, in.v, out, lse);
    ops::cuda::attention_backward(in.q, in.k, in.v, out, lse, in.dout, dq, dk, dv);

    const Tensor q64 = to_cpu_f64(in.q), k64 = to_cpu_f64(in.k), v64 = to_cpu_f64(in.v);
    const Tensor out_ref = Tensor::empty(c.q(), DType::kF64);
    const Tensor lse_ref = Tensor::empty(c.lse(), DType::kF64);
    ops::attention_forward(q64, k64, v64, out_ref, lse_ref);
    expect_parity(label("attention_forward.out", c), out, out_ref, c.dtype);
    // lse is fp32 whatever the activations are.
    expect_parity(label("attention_forward.lse", c), lse, lse_ref, DType::kF32);

    // The CPU backward gets the GPU's own out and lse so that only the backward is compared.
    const Tensor dq_ref = Tensor::empty(c.q(), DType::kF64);
    const Tensor dk_ref = Tensor::empty(c.kv(), DType::kF64);
    const Tensor dv_ref = Tensor::empty(c.kv(), DType::kF64);
    ops::attention_backward(q64, k64, v64, to_cpu_f64(out), to_cpu_f64(lse), to_cpu_f64(in.dout),
                            dq_ref, dk_ref, dv_ref);
    expect_parity(label("attention_backward.dq", c), dq, dq_ref, c.dtype);
    expect_parity(label("attention_backward.dk", c), dk, dk_ref, c.dtype);
    expect_parity(label("attention_backward.dv", c), dv, dv_ref, c.dtype);
  }
}

TEST_F(CudaAttention, BackwardIsBitIdenticalAcrossRuns) {
  for (const Case& c : {Case{2, 200, 4, 2, 64, DType::kBF16}, Case{1, 257, 8, 2, 128, DType::kBF16},
                        Case{1, 90, 4, 2, 48, DType::kF32}}) {
    const Inputs in = random_inputs(c, 500);
    const Tensor out = Tensor::empty(c.q(), c.dtype, kGpu);
    const Tensor lse = Tensor::empty(c.lse(), DType::kF32, kGpu);
    ops::cuda::attention_forward(in.q, in.k, in.v, out, lse);
    std::vector<double> first[3];
    for (int run = 0; run < 3; ++run) {
      const Tensor dq = Tensor::empty(c.q(), c.dtype, kGpu);
      const Tensor dk = Tensor::empty(c.kv(), c.dtype, kGpu);
      const Tensor dv = Tensor::empty(c.kv(), c.dtype, kGpu);
      ops::cuda::attention_backward(in.q, in.k, in.v, out, lse, in.dout, dq, dk, dv);
      const std::vector<double> got[3] = {values(dq), values(dk), values(dv)};
      for (int i = 0; i < 3; ++i) {
        if (run == 0)
          first[i] = got[i];
        else
          EXPECT_EQ(got[i], first[i])
              << label("attention_backward", c) << " output " << i << " run " << run;
      }
    }
  }
}

TEST_F(CudaAttention, RejectsMismatchedShapesAndDtypes) {
  const Case c{2, 8, 4, 2, 32, DType::kBF16};
  const Tensor q = random_gpu(c.q(), c.dtype, 1), k = random_gpu(c.kv(), c.dtype, 2),
               v = random_gpu(c.kv(), c.dtype, 3);
  const Tensor out = Tensor::empty(c.q(), c.dtype, kGpu);
  const Tensor lse = Tensor::empty(c.lse(), DType::kF32, kGpu);
  const Tensor dq = Tensor::empty(c.q(), c.dtype, kGpu);
  const Tensor dk = Tensor::empty(c.kv(), c.dtype, kGpu);
  const Tensor dv = Tensor::empty(c.kv(), c.dtype, kGpu);
  const auto fwd = [&](const TensorView& q_, const TensorView& k_, const TensorView& out_,
                       const TensorView& lse_) {
    return [=] { ops::cuda::attention_forward(q_, k_, v, out_, lse_); };
  };
  expect_shape_error(fwd(q, random_gpu(Shape{2, 8, 2, 16}, c.dtype, 4), out, lse), "k of shape");
  expect_shape_error(fwd(q, random_gpu(Shape{2, 8, 3, 32}, c.dtype, 4), out, lse),
                     "multiple of kv heads");
  expect_shape_error(fwd(q, k, out, Tensor::empty(Shape{2, 8, 4}, DType::kF32, kGpu)),
                     "lse of shape");
  expect_shape_error(fwd(q, k, out, Tensor::empty(c.lse(), DType::kBF16, kGpu)), "lse must be f32");
  expect_shape_error(fwd(q, k, Tensor::empty(c.q(), DType::kF32, kGpu), lse),
                     "cuda::attention_forward: out");
  expect_shape_error(fwd(q, k, Tensor::empty(c.kv(), c.dtype, kGpu), lse),
                     "cuda::attention_forward: out");
  expect_shape_error(fwd(q, k, out, Tensor::empty(c.lse(), DType::kF32)), "expected CUDA tensors");
  expect_shape_error(
      fwd(random_gpu(Shape{1, 4, 1, 300}, c.dtype, 5), random_gpu(Shape{1, 4, 1, 300}, c.dtype, 6),
          Tensor::empty(Shape{1, 4, 1, 300}, c.dtype, kGpu),
          Tensor::empty(Shape{1, 1, 4}, DType::kF32, kGpu)),
      "head size");
  expect_shape_error(
      [&] {
        ops::cuda::attention_backward(q, k, v, out, lse, out, dq,
                                      Tensor::empty(c.q(), c.dtype, kGpu), dv);
      },
      "cuda::attention_backward: dk");
  expect_shape_error(
      [&] {
        ops::cuda::attention_backward(q, k, v, out, lse, Tensor::empty(c.q(), DType::kF32, kGpu),
                                      dq, dk, dv);
      },
      "cuda::attention_backward: dout");
}

// Not an assertion: forward and backward TFLOP/s at the benchmark's sizes, counted as
// FlashAttention does for a causal mask (forward 4 B NH T^2 HS / 2, backward 2.5 times that).
TEST_F(CudaAttention, TimingAtBenchmarkSizes) {
  for (const Case& c :
       {Case{16, 1024, 12, 12, 64, DType::kBF16}, Case{4, 2048, 16, 16, 128, DType::kBF16}}) {
    const Inputs in = random_inputs(c, 900);
    const Tensor out = Tensor::empty(c.q(), c.dtype, kGpu);
    const Tensor lse = Tensor::empty(c.lse(), DType::kF32, kGpu);
    const Tensor dq = Tensor::empty(c.q(), c.dtype, kGpu);
    const Tensor dk = Tensor::empty(c.kv(), c.dtype, kGpu);
    const Tensor dv = Tensor::empty(c.kv(), c.dtype, kGpu);
    const auto forward = [&] { ops::cuda::attention_forward(in.q, in.k, in.v, out, lse); };
    const auto backward = [&] {
      ops::cuda::attention_backward(in.q, in.k, in.v, out, lse, in.dout, dq, dk, dv);
    };
    const ForwardBackwardMs ms = time_forward_backward(forward, backward);
    const double fwd_ms = ms.forward, bwd_ms = ms.backward;
    const double fwd_flop = 4.0 * c.B * c.NH * c.HS * static_cast<double>(c.T) * c.T / 2;
    const double bwd_flop = 2.5 * fwd_flop;
    std::printf(
        "[timing] attention/%s/%s forward %.3f ms %.1f TFLOP/s, backward %.3f ms %.1f TFLOP/s, "
        "forward+backward %.1f TFLOP/s\n",
        std::string(dtype_name(c.dtype)).c_str(), Shape{c.B, c.T, c.NH, c.NKV, c.HS}.str().c_str(),
        fwd_ms, fwd_flop / fwd_ms * 1e-9, bwd_ms, bwd_flop / bwd_ms * 1e-9,
        (fwd_flop + bwd_flop) / (fwd_ms + bwd_ms) * 1e-9);
  }
}

}  // namespace
}  // namespace memento::testing
