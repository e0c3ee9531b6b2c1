// Parity of the CUDA chunked linear attention with the CPU op (run in fp64 on the values the GPU
// saw) over a grid of shapes, with and without decay, initial/final states and their gradients,
// in bf16 (tensor cores, and the CUDA-core path that unaligned bf16 takes) and fp32; bit-identical
// reruns; shape errors; a timing print at the benchmark's size.
#include "core/cuda/linear_attention.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <string>
#include <vector>

#include "core/ops/linear_attention.h"
#include "tests/cuda/cuda_testing.h"
#include "tests/testing/expect_error.h"

namespace memento::testing {
namespace {

struct Case {
  int64_t B, T, NH, NKV, HS, chunk;
  Shape q() const { return {B, T, NH, HS}; }       // q, out, dout, dq
  Shape kv() const { return {B, T, NKV, HS}; }     // k, v, dk, dv
  Shape state() const { return {B, NH, HS, HS}; }  // initial, final and their gradients
};

// T below, at and past a chunk, GQA groups of 1 to 4, every supported HS, chunk below, at and
// above the GPU's 64-token tile.
const Case kCases[] = {{1, 1, 1, 1, 16, 64},   {2, 37, 4, 2, 32, 16},  {1, 130, 6, 2, 32, 64},
                       {2, 256, 4, 4, 64, 64}, {1, 70, 4, 1, 128, 32}, {3, 65, 3, 3, 16, 100},
                       {1, 200, 2, 2, 64, 7}};

struct Variant {
  bool decay, states;
};
const Variant kVariants[] = {{false, false}, {true, false}, {false, true}, {true, true}};

std::string label(const char* what, DType dtype, const Case& c, const Variant& v) {
  return std::string("linear_attention.") + what + "/" + std::string(dtype_name(dtype)) + "/" +
         Shape{c.B, c.T, c.NH, c.NKV, c.HS, c.chunk}.str() + (v.decay ? "/decay" : "/no-decay") +
         (v.states ? "/states" : "/no-states");
}

struct Inputs {
  Tensor q, k, v, dout, initial, dfinal;  // states undefined unless asked for
};

Inputs random_inputs(const Case& c, DType dtype, bool states, uint64_t seed) {
  Inputs in{random_gpu(c.q(), dtype, seed),
            random_gpu(c.kv(), dtype, seed + 1),
            random_gpu(c.kv(), dtype, seed + 2),
            random_gpu(c.q(), dtype, seed + 3),
            {},
            {}};
  if (states) {
    in.initial = random_gpu(c.state(), DType::kF32, seed + 4);
    in.dfinal = random_gpu(c.state(), DType::kF32, seed + 5);
  }
  return in;
}

struct Outputs {
  Tensor out, dq, dk, dv, final_state, dinitial;  // states undefined unless asked for
};

TensorView view_or_none(const Tensor& t) { return t.defined() ? t.view() : TensorView(); }

// Forward then backward on the GPU.
Outputs run_gpu(const Case& c, DType dtype, const Inputs& in, std::span<const double> decay) {
  Outputs o{Tensor::empty(c.q(), dtype, kGpu),
            Tensor::empty(c.q(), dtype, kGpu),
            Tensor::empty(c.kv(), dtype, kGpu),
            Tensor::empty(c.kv(), dtype, kGpu),
            {},
            {}};
  if (in.initial.defined()) {
    o.final_state = Tensor::empty(c.state(), DType::kF32, kGpu);
    o.dinitial = Tensor::empty(c.state(), DType::kF32, kGpu);
  }
  ops::cuda::linear_attention_forward(in.q, in.k, in.v, o.out, decay, c.chunk,
                                      view_or_none(in.initial), view_or_none(o.final_state));
  ops::cuda::linear_attention_backward(in.q, in.k, in.v, in.dout, o.dq, o.dk, o.dv, decay, c.chunk,
                                       view_or_none(in.initial), view_or_none(in.dfinal),
                                       view_or_none(o.dinitial));
  return o;
}

// The CPU op in fp64 on exactly the values the GPU saw.
Outputs run_cpu(const Case& c, const Inputs& in, std::span<const double> decay) {
  const bool states = in.initial.defined();
  Outputs o{Tensor::empty(c.q(), DType::kF64),
            Tensor::empty(c.q(), DType::kF64),
            Tensor::empty(c.kv(), DType::kF64),
            Tensor::empty(c.kv(), DType::kF64),
            {},
            {}};
  if (states) {
    o.final_state = Tensor::empty(c.state(), DType::kF64);
    o.dinitial = Tensor::empty(c.state(), DType::kF64);
  }
  const Tensor q = to_cpu_f64(in.q), k = to_cpu_f64(in.k), v = to_cpu_f64(in.v);
  const Tensor dout = to_cpu_f64(in.dout);
  const Tensor initial = states ? to_cpu_f64(in.initial) : Tensor();
  const Tensor dfinal = states ? to_cpu_f64(in.dfinal) : Tensor();
  ops::linear_attention_forward(q, k, v, o.out, decay, c.chunk, view_or_none(initial),
                                view_or_none(o.final_state));
  ops::linear_attention_backward(q, k, v, dout, o.dq, o.dk, o.dv, decay, c.chunk,
                                 view_or_none(initial), view_or_none(dfinal),
                                 view_or_none(o.dinitial));
  return o;
}

void expect_all_parity(const Outputs& gpu, const Outputs& cpu, DType dtype, const Case& c,
                       const Variant& var) {
  expect_parity(label("out", dtype, c, var), gpu.out, cpu.out, dtype);
  expect_parity(label("dq", dtype, c, var), gpu.dq, cpu.dq, dtype);
  expect_parity(label("dk", dtype, c, var), gpu.dk, cpu.dk, dtype);
  expect_parity(label("dv", dtype, c, var), gpu.dv, cpu.dv, dtype);
  if (var.states) {
    // fp32 states, but on the bf16 path their products take bf16-rounded operands.
    expect_parity(label("final_state", dtype, c, var), gpu.final_state, cpu.final_state, dtype);
    expect_parity(label("dinitial_state", dtype, c, var), gpu.dinitial, cpu.dinitial, dtype);
  }
}

class CudaLinearAttention : public CudaTest {};

TEST_F(CudaLinearAttention, ForwardAndBackwardMatchCpu) {
  uint64_t seed = 1;
  for (const DType dtype : {DType::kF32, DType::kBF16}) {
    for (const Case& c : kCases) {
      for (const Variant& var : kVariants) {
        const std::vector<double> decay =
            var.decay ? ops::alibi_decays(c.NH) : std::vector<double>{};
        const Inputs in = random_inputs(c, dtype, var.states, seed += 10);
        const Outputs gpu = run_gpu(c, dtype, in, decay);
        expect_all_parity(gpu, run_cpu(c, in, decay), dtype, c, var);
      }
    }
  }
}

// bf16 tensors whose data is not 16-byte aligned take the CUDA-core scan: views 2 bytes into
// their buffers.
TEST_F(CudaLinearAttention, UnalignedBf16MatchesCpu) {
  const Case c{2, 100, 4, 2, 64, 64};
  const Variant var{true, true};
  const DType dtype = DType::kBF16;
  const std::vector<double> decay = ops::alibi_decays(c.NH);
  std::vector<Tensor> buffers;
  const auto unaligned = [&](const Shape& s) {
    buffers.push_back(Tensor::empty(Shape{s.numel() + 1}, dtype, kGpu));
    return TensorView(static_cast<char*>(buffers.back().view().raw()) + dtype_size(dtype), s, dtype,
                      kGpu);
  };
  const Inputs aligned_in = random_inputs(c, dtype, var.states, 300);
  const auto moved = [&](const Tensor& t) {
    const TensorView view = unaligned(t.shape());
    copy(t, view);
    return view;
  };
  const TensorView q = moved(aligned_in.q), k = moved(aligned_in.k), v = moved(aligned_in.v);
  const TensorView dout = moved(aligned_in.dout);
  const TensorView out = unaligned(c.q()), dq = unaligned(c.q());
  const TensorView dk = unaligned(c.kv()), dv = unaligned(c.kv());
  const Tensor final_state = Tensor::empty(c.state(), DType::kF32, kGpu);
  const Tensor dinitial = Tensor::empty(c.state(), DType::kF32, kGpu);
  ops::cuda::linear_attention_forward(q, k, v, out, decay, c.chunk, aligned_in.initial,
                                      final_state);
  ops::cuda::linear_attention_backward(q, k, v, dout, dq, dk, dv, decay, c.chunk,
                                       aligned_in.initial, aligned_in.dfinal, dinitial);
  const Outputs cpu = run_cpu(c, aligned_in, decay);
  expect_parity(label("unaligned.out", dtype, c, var), out, cpu.out, dtype);
  expect_parity(label("unaligned.dq", dtype, c, var), dq, cpu.dq, dtype);
  expect_parity(label("unaligned.dk", dtype, c, var), dk, cpu.dk, dtype);
  expect_parity(label("unaligned.dv", dtype, c, var), dv, cpu.dv, dtype);
  // The CUDA-core path keeps the states' products in fp32.
  expect_parity(label("unaligned.final_state", dtype, c, var), final_state, cpu.final_state,
                DType::kF32);
  expect_parity(label("unaligned.dinitial_state", dtype, c, var), dinitial, cpu.dinitial,
                DType::kF32);
}

TEST_F(CudaLinearAttention, RerunsAreBitIdentical) {
  const Case c{2, 300, 6, 2, 64, 64};  // grouped heads: dk, dv go through the group sum
  for (const DType dtype : {DType::kF32, DType::kBF16}) {
    const std::vector<double> decay = ops::alibi_decays(c.NH);
    const Inputs in = random_inputs(c, dtype, true, 500);
    const Outputs first = run_gpu(c, dtype, in, decay);
    const Outputs second = run_gpu(c, dtype, in, decay);
    EXPECT_EQ(values(first.out), values(second.out));
    EXPECT_EQ(values(first.dq), values(second.dq));
    EXPECT_EQ(values(first.dk), values(second.dk));
    EXPECT_EQ(values(first.dv), values(second.dv));
    EXPECT_EQ(values(first.final_state), values(second.final_state));
    EXPECT_EQ(values(first.dinitial), values(second.dinitial));
  }
}

TEST_F(CudaLinearAttention, RejectsBadShapesAndDtypes) {
  const Case c{2, 8, 4, 2, 32, 16};
  const Inputs in = random_inputs(c, DType::kBF16, true, 700);
  const Tensor out = Tensor::empty(c.q(), DType::kBF16, kGpu);
  const Tensor dq = Tensor::empty(c.q(), DType::kBF16, kGpu);
  const Tensor dk = Tensor::empty(c.kv(), DType::kBF16, kGpu);
  const Tensor dv = Tensor::empty(c.kv(), DType::kBF16, kGpu);
  const std::vector<double> no_decay;
  const auto forward = [&](const TensorView& q, const TensorView& k, const TensorView& o,
                           std::span<const double> decay, int64_t chunk, const TensorView& init) {
    ops::cuda::linear_attention_forward(q, k, in.v, o, decay, chunk, init);
  };
  expect_shape_error(
      [&] {
        forward(in.q, random_gpu(Shape{2, 8, 2, 16}, DType::kBF16, 1), out, no_decay, 16, {});
      },
      "expected k of shape");
  expect_shape_error(
      [&] { forward(in.q, in.k, Tensor::empty(c.kv(), DType::kBF16, kGpu), no_decay, 16, {}); },
      "cuda::linear_attention_forward: out");
  expect_shape_error(
      [&] { forward(in.q, in.k, Tensor::empty(c.q(), DType::kF32, kGpu), no_decay, 16, {}); },
      "cuda::linear_attention_forward: out");
  expect_shape_error([&] { forward(in.q, in.k, out, no_decay, 0, {}); }, "chunk");
  expect_shape_error([&] { forward(in.q, in.k, out, std::vector<double>{0.5}, 16, {}); },
                     "decay values");
  expect_shape_error([&] { forward(in.q, in.k, out, std::vector<double>(4, 1.5), 16, {}); },
                     "decay must lie in (0, 1]");
  expect_shape_error(
      [&] { forward(in.q, in.k, out, no_decay, 16, Tensor::empty(c.state(), DType::kBF16, kGpu)); },
      "cuda::linear_attention_forward: initial_state");
  expect_shape_error(
      [&] {
        forward(in.q, in.k, out, no_decay, 16,
                Tensor::empty(Shape{2, 4, 32, 16}, DType::kF32, kGpu));
      },
      "cuda::linear_attention_forward: initial_state");
  const Case odd{1, 4, 2, 2, 48, 16};  // HS 48 is not one of the GPU's head sizes
  const Tensor q48 = random_gpu(odd.q(), DType::kBF16, 2);
  expect_shape_error(
      [&] {
        ops::cuda::linear_attention_forward(
            q48, q48, q48, Tensor::empty(odd.q(), DType::kBF16, kGpu), no_decay, 16);
      },
      "head size");
  expect_shape_error(
      [&] {
        const Tensor cpu = Tensor::empty(c.q(), DType::kBF16);
        forward(in.q, in.k, cpu, no_decay, 16, {});
      },
      "expected CUDA tensors");
  expect_shape_error(
      [&] {
        ops::cuda::linear_attention_backward(in.q, in.k, in.v, in.dout, dq, dq, dv, no_decay, 16);
      },
      "cuda::linear_attention_backward: dk");
  expect_shape_error(
      [&] {
        ops::cuda::linear_attention_backward(in.q, in.k, in.v, in.dout, dq, dk, dv, no_decay, 16,
                                             {}, Tensor::empty(c.state(), DType::kBF16, kGpu));
      },
      "cuda::linear_attention_backward: dfinal_state");
}

// Not an assertion: forward and backward time at the benchmark's size, after a warm-up.
TEST_F(CudaLinearAttention, TimingAtBenchmarkSize) {
  const Case c{16, 1024, 12, 12, 64, 64};
  const DType dtype = DType::kBF16;
  const std::vector<double> decay = ops::alibi_decays(c.NH);
  const Inputs in = random_inputs(c, dtype, false, 900);
  const Tensor out = Tensor::empty(c.q(), dtype, kGpu);
  const Tensor dq = Tensor::empty(c.q(), dtype, kGpu);
  const Tensor dk = Tensor::empty(c.kv(), dtype, kGpu);
  const Tensor dv = Tensor::empty(c.kv(), dtype, kGpu);
  const auto forward = [&] {
    ops::cuda::linear_attention_forward(in.q, in.k, in.v, out, decay, c.chunk);
  };
  const auto backward = [&] {
    ops::cuda::linear_attention_backward(in.q, in.k, in.v, in.dout, dq, dk, dv, decay, c.chunk);
  };
  const ForwardBackwardMs ms = time_forward_backward(forward, backward);
  const double fwd_ms = ms.forward, bwd_ms = ms.backward;
  std::printf(
      "[timing] linear_attention/%s/%s forward %.3f ms, backward %.3f ms, "
      "forward+backward %.3f ms\n",
      std::string(dtype_name(dtype)).c_str(),
      Shape{c.B, c.T, c.NH, c.NKV, c.HS, c.chunk}.str().c_str(), fwd_ms, bwd_ms, fwd_ms + bwd_ms);
}

}  // namespace
}  // namespace memento::testing
