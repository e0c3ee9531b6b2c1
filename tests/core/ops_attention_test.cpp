// Causal softmax attention and RoPE against dense fp64 references with explicit T x T matrices,
// finite-difference gradients, determinism and kMeta shapes.
#include <gtest/gtest.h>
#include <omp.h>

#include <cmath>
#include <cstring>
#include <vector>

#include "core/ops/attention.h"
#include "core/ops/rope.h"
#include "testing/gradcheck.h"

namespace memento {
namespace {

using testing::random_tensor;

struct Case {
  int64_t B, T, NH, NKV, HS;
};

// Dense reference for one (b, h): S = q k^T / sqrt(HS) masked, P = softmax(S), O = P V and the
// gradients dQ = dS K scale, dK += dS^T Q scale, dV += P^T dO with dS = P (dP - rowsum(dP P)).
struct Reference {
  Tensor out, lse, dq, dk, dv;  // fp64
};

Reference dense_reference(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& dout,
                          const Case& c) {
  Reference r{Tensor::zeros(q.shape(), DType::kF64), Tensor::zeros({c.B, c.NH, c.T}, DType::kF64),
              Tensor::zeros(q.shape(), DType::kF64), Tensor::zeros(k.shape(), DType::kF64),
              Tensor::zeros(k.shape(), DType::kF64)};
  const double scale = 1.0 / std::sqrt(static_cast<double>(c.HS));
  auto at = [&](const Tensor& x, int64_t b, int64_t t, int64_t h, int64_t d) -> double& {
    return x.data<double>()[((b * c.T + t) * x.size(2) + h) * c.HS + d];
  };
  std::vector<double> P(c.T * c.T), dS(c.T * c.T);
  for (int64_t b = 0; b < c.B; ++b) {
    for (int64_t h = 0; h < c.NH; ++h) {
      const int64_t g = h / (c.NH / c.NKV);
      for (int64_t i = 0; i < c.T; ++i) {
        double mx = -INFINITY;
        for (int64_t j = 0; j <= i; ++j) {
          double s = 0;
          for (int64_t d = 0; d < c.HS; ++d) s += at(q, b, i, h, d) * at(k, b, j, g, d);
          P[i * c.T + j] = s * scale;
          mx = std::max(mx, s * scale);
        }
        double sum = 0;
        for (int64_t j = 0; j <= i; ++j) sum += std::exp(P[i * c.T + j] - mx);
        r.lse.data<double>()[(b * c.NH + h) * c.T + i] = mx + std::log(sum);
        for (int64_t j = 0; j <= i; ++j) P[i * c.T + j] = std::exp(P[i * c.T + j] - mx) / sum;
        for (int64_t d = 0; d < c.HS; ++d)
          for (int64_t j = 0; j <= i; ++j)
            at(r.out, b, i, h, d) += P[i * c.T + j] * at(v, b, j, g, d);
        double rowdot = 0;
        for (int64_t j = 0; j <= i; ++j) {
          double dp = 0;
          for (int64_t d = 0; d < c.HS; ++d) dp += at(dout, b, i, h, d) * at(v, b, j, g, d);
          dS[i * c.T + j] = dp;
          rowdot += dp * P[i * c.T + j];
        }
        for (int64_t j = 0; j <= i; ++j)
          dS[i * c.T + j] = P[i * c.T + j] * (dS[i * c.T + j] - rowdot);
      }
      for (int64_t i = 0; i < c.T; ++i) {
        for (int64_t j = 0; j <= i; ++j) {
          for (int64_t d = 0; d < c.HS; ++d) {
            at(r.dq, b, i, h, d) += dS[i * c.T + j] * at(k, b, j, g, d) * scale;
            at(r.dk, b, j, g, d) += dS[i * c.T + j] * at(q, b, i, h, d) * scale;
            at(r.dv, b, j, g, d) += P[i * c.T + j] * at(dout, b, i, h, d);
          }
        }
      }
    }
  }
  return r;
}

Tensor to_dtype(const Tensor& x, DType dtype) {
  Tensor y = Tensor::empty(x.shape(), dtype);
  copy(x, y);
  return y;
}

double max_abs_diff(const Tensor& a, const Tensor& expected) {
  const Tensor a64 = to_dtype(a, DType::kF64);
  double m = 0;
  for (int64_t i = 0; i < a.numel(); ++i)
    m = std::max(m, std::fabs(a64.data<double>()[i] - expected.data<double>()[i]));
  return m;
}

bool bit_equal(const Tensor& a, const Tensor& b) {
  return a.bytes() == b.bytes() && std::memcmp(a.view().raw(), b.view().raw(), a.bytes()) == 0;
}

struct OpResult {
  Tensor out, lse, dq, dk, dv;
};

OpResult run_op(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& dout) {
  OpResult r{Tensor::empty_like(q), Tensor::empty({q.size(0), q.size(2), q.size(1)}, q.dtype()),
             Tensor::empty_like(q), Tensor::empty_like(k), Tensor::empty_like(v)};
  ops::attention_forward(q, k, v, r.out, r.lse);
  ops::attention_backward(q, k, v, r.out, r.lse, dout, r.dq, r.dk, r.dv);
  return r;
}

TEST(Attention, MatchesDenseReferenceOverGrid) {
  std::vector<Case> cases;
  for (int64_t B : {1, 2})
    for (int64_t T : {1, 7, 64, 100})
      for (int64_t NKV : {4, 2, 1})
        for (int64_t HS : {8, 16}) cases.push_back({B, T, 4, NKV, HS});
  cases.push_back({1, 150, 2, 1, 32});  // three tiles of keys and queries
  uint64_t seed = 1;
  for (const Case& c : cases) {
    SCOPED_TRACE(::testing::Message() << "B " << c.B << " T " << c.T << " NH " << c.NH << " NKV "
                                      << c.NKV << " HS " << c.HS);
    const Tensor q = random_tensor({c.B, c.T, c.NH, c.HS}, DType::kF64, seed++);
    const Tensor k = random_tensor({c.B, c.T, c.NKV, c.HS}, DType::kF64, seed++);
    const Tensor v = random_tensor({c.B, c.T, c.NKV, c.HS}, DType::kF64, seed++);
    const Tensor dout = random_tensor({c.B, c.T, c.NH, c.HS}, DType::kF64, seed++);
    const Reference ref = dense_reference(q, k, v, dout, c);
    const OpResult r64 = run_op(q, k, v, dout);
    EXPECT_LT(max_abs_diff(r64.out, ref.out), 1e-12);
    EXPECT_LT(max_abs_diff(r64.lse, ref.lse), 1e-12);
    EXPECT_LT(max_abs_diff(r64.dq, ref.dq), 1e-12);
    EXPECT_LT(max_abs_diff(r64.dk, ref.dk), 1e-12);
    EXPECT_LT(max_abs_diff(r64.dv, ref.dv), 1e-12);
    const OpResult r32 = run_op(to_dtype(q, DType::kF32), to_dtype(k, DType::kF32),
                                to_dtype(v, DType::kF32), to_dtype(dout, DType::kF32));
    EXPECT_LT(max_abs_diff(r32.out, ref.out), 2e-5);
    EXPECT_LT(max_abs_diff(r32.lse, ref.lse), 2e-5);
    EXPECT_LT(max_abs_diff(r32.dq, ref.dq), 1e-4);
    EXPECT_LT(max_abs_diff(r32.dk, ref.dk), 1e-4);
    EXPECT_LT(max_abs_diff(r32.dv, ref.dv), 1e-4);
  }
}

TEST(Attention, FiniteDifferenceGradients) {
  for (int64_t NKV : {3, 1}) {
    const Case c{2, 70, 3, NKV, 8};
    ParameterSet none;
    none.allocate(DType::kF64);
    const Tensor q = random_tensor({c.B, c.T, c.NH, c.HS}, DType::kF64, 11);
    const Tensor k = random_tensor({c.B, c.T, c.NKV, c.HS}, DType::kF64, 12);
    const Tensor v = random_tensor({c.B, c.T, c.NKV, c.HS}, DType::kF64, 13);
    testing::GradCheckCase gc;
    gc.params = &none;
    gc.inputs = {q, k, v};
    gc.input_names = {"q", "k", "v"};
    Tensor saved_out, saved_lse;
    gc.forward = [&](LayerContext& ctx) {
      Tensor out = Tensor::empty_like(q);
      Tensor lse = Tensor::empty({c.B, c.NH, c.T}, DType::kF64);
      ops::attention_forward(q, k, v, out, lse);
      if (ctx.training) {
        saved_out = out;
        saved_lse = lse;
      }
      return out;
    };
    gc.backward = [&](LayerContext&, const Tensor& dout) {
      std::vector<Tensor> g{Tensor::empty_like(q), Tensor::empty_like(k), Tensor::empty_like(v)};
      ops::attention_backward(q, k, v, saved_out, saved_lse, dout, g[0], g[1], g[2]);
      return g;
    };
    testing::expect_gradients_match(gc);
  }
}

TEST(Attention, DeterministicAcrossRunsAndThreadCounts) {
  const Case c{2, 100, 4, 2, 16};
  const Tensor q = random_tensor({c.B, c.T, c.NH, c.HS}, DType::kF32, 21);
  const Tensor k = random_tensor({c.B, c.T, c.NKV, c.HS}, DType::kF32, 22);
  const Tensor v = random_tensor({c.B, c.T, c.NKV, c.HS}, DType::kF32, 23);
  const Tensor dout = random_tensor({c.B, c.T, c.NH, c.HS}, DType::kF32, 24);
  const int threads = omp_get_max_threads();
  omp_set_num_threads(2);
  const OpResult a = run_op(q, k, v, dout);
  const OpResult b = run_op(q, k, v, dout);
  omp_set_num_threads(1);
  const OpResult one = run_op(q, k, v, dout);
  omp_set_num_threads(threads);
  for (const OpResult* r : {&b, &one}) {
    EXPECT_TRUE(bit_equal(a.out, r->out));
    EXPECT_TRUE(bit_equal(a.lse, r->lse));
    EXPECT_TRUE(bit_equal(a.dq, r->dq));
    EXPECT_TRUE(bit_equal(a.dk, r->dk));
    EXPECT_TRUE(bit_equal(a.dv, r->dv));
  }
}

TEST(Attention, MetaShapesAndShapeErrors) {
  const Device meta = Device::meta();
  const Tensor q = Tensor::empty({2, 5, 4, 8}, DType::kF32, meta);
  const Tensor kv = Tensor::empty({2, 5, 2, 8}, DType::kF32, meta);
  const Tensor out = Tensor::empty({2, 5, 4, 8}, DType::kF32, meta);
  const Tensor lse = Tensor::empty({2, 4, 5}, DType::kF32, meta);
  EXPECT_NO_THROW(ops::attention_forward(q, kv, kv, out, lse));
  EXPECT_NO_THROW(ops::attention_backward(q, kv, kv, out, lse, out, out, kv, kv));
  const Tensor bad_kv = Tensor::empty({2, 5, 3, 8}, DType::kF32, meta);
  EXPECT_THROW(ops::attention_forward(q, bad_kv, bad_kv, out, lse), ShapeError);
  const Tensor bad_lse = Tensor::empty({2, 5, 4}, DType::kF32, meta);
  EXPECT_THROW(ops::attention_forward(q, kv, kv, out, bad_lse), ShapeError);
}

// RoPE: x_i' = x_i cos - x_{i+HS/2} sin, x_{i+HS/2}' = x_{i+HS/2} cos + x_i sin, angle
// p * theta^(-2i/HS).
TEST(Rope, MatchesRotateHalfDefinition) {
  const int64_t B = 2, T = 9, NH = 3, HS = 16;
  const double theta = 10000.0;
  const Tensor x = random_tensor({B, T, NH, HS}, DType::kF64, 31);
  Tensor y = to_dtype(x, DType::kF64);
  ops::rope_(y, ops::rope_table(T, HS, theta, DType::kF64));
  double err = 0;
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < T; ++t)
      for (int64_t h = 0; h < NH; ++h)
        for (int64_t i = 0; i < HS / 2; ++i) {
          const int64_t base = ((b * T + t) * NH + h) * HS;
          const double angle = static_cast<double>(t) * std::pow(theta, -2.0 * i / HS);
          const double a = x.data<double>()[base + i], c = x.data<double>()[base + i + HS / 2];
          err = std::max(err, std::fabs(y.data<double>()[base + i] -
                                        (a * std::cos(angle) - c * std::sin(angle))));
          err = std::max(err, std::fabs(y.data<double>()[base + i + HS / 2] -
                                        (c * std::cos(angle) + a * std::sin(angle))));
        }
  EXPECT_LT(err, 1e-14);
  // Position 0 is the identity; fp32 tables agree with fp64 ones.
  for (int64_t i = 0; i < NH * HS; ++i) EXPECT_EQ(y.data<double>()[i], x.data<double>()[i]);
  Tensor y32 = to_dtype(x, DType::kF32);
  ops::rope_(y32, ops::rope_table(T, HS, theta, DType::kF32));
  EXPECT_LT(max_abs_diff(y32, y), 1e-5);
}

TEST(Rope, OffsetContinuesPositions) {
  const int64_t T = 12, NH = 2, HS = 8;
  const Tensor x = random_tensor({1, T, NH, HS}, DType::kF64, 35);
  Tensor full = to_dtype(x, DType::kF64);
  ops::rope_(full, ops::rope_table(T, HS, 500.0, DType::kF64));
  // The last 5 positions rotated on their own with first_position 7.
  Tensor tail = Tensor::empty({1, 5, NH, HS}, DType::kF64);
  std::memcpy(tail.data<double>(), x.data<double>() + 7 * NH * HS, tail.bytes());
  ops::rope_(tail, ops::rope_table(5, HS, 500.0, DType::kF64, Device::cpu(), 7));
  for (int64_t i = 0; i < tail.numel(); ++i)
    EXPECT_NEAR(tail.data<double>()[i], full.data<double>()[7 * NH * HS + i], 1e-14);
}

TEST(Rope, BackwardIsTheAdjointAndInverse) {
  const int64_t B = 1, T = 17, NH = 2, HS = 8;
  const ops::RopeTable table = ops::rope_table(T, HS, 10000.0, DType::kF64);
  const Tensor x = random_tensor({B, T, NH, HS}, DType::kF64, 32);
  const Tensor w = random_tensor({B, T, NH, HS}, DType::kF64, 33);
  Tensor rx = to_dtype(x, DType::kF64), rw = to_dtype(w, DType::kF64);
  ops::rope_(rx, table);
  ops::rope_backward_(rw, table);
  // <rope(x), w> = <x, rope_backward(w)>: rope_backward_ is the gradient of rope_.
  EXPECT_NEAR(testing::dot(rx, w), testing::dot(x, rw), 1e-12);
  ops::rope_backward_(rx, table);
  EXPECT_LT(max_abs_diff(rx, x), 1e-14);
  // Meta tensors: shapes checked, nothing computed; odd head sizes rejected.
  const Tensor m = Tensor::empty({B, T, NH, HS}, DType::kF32, Device::meta());
  EXPECT_NO_THROW(ops::rope_(m, ops::rope_table(T, HS, 1e4, DType::kF32, Device::meta())));
  EXPECT_THROW(ops::rope_table(T, 7, 1e4, DType::kF32), ShapeError);
  EXPECT_THROW(ops::rope_(m, ops::rope_table(T + 1, HS, 1e4, DType::kF32, Device::meta())),
               ShapeError);
}

}  // namespace
}  // namespace memento
