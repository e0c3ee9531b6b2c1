// Chunked causal linear attention against the recurrent definition with explicit T x T matrices
// in fp64, with and without decay and initial/final states; state composition across halves;
// finite-difference gradients; determinism; kMeta shapes.
#include <gtest/gtest.h>
#include <omp.h>

#include <cmath>
#include <cstring>
#include <vector>

#include "core/ops/linear_attention.h"
#include "testing/gradcheck.h"

namespace memento {
namespace {

using testing::random_tensor;

struct Case {
  int64_t B, T, NH, NKV, HS;
};

struct Grads {
  Tensor out, final_state, dq, dk, dv, dinitial;
};

// Dense reference: A_tj = lambda^(t-j) (q_t . k_j) for j <= t,
//   o_t = sum_j A_tj v_j + lambda^(t+1) q_t P,  F = lambda^T P + sum_j lambda^(T-1-j) k_j^T v_j.
// For loss = <o, dO> + <F, G>, with dS_tj = lambda^(t-j) (do_t . v_j) for j <= t:
//   dq = dS K + lambda^(t+1) dO P^T,  dk = dS^T Q + lambda^(T-1-j) G v,
//   dv = A^T dO + lambda^(T-1-j) G^T k,  dP = sum_t lambda^(t+1) q_t^T do_t + lambda^T G.
Grads dense_reference(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& dout,
                      const Tensor& P, const Tensor& G, const std::vector<double>& decay,
                      const Case& c) {
  const Shape state{c.B, c.NH, c.HS, c.HS};
  Grads r{Tensor::zeros(q.shape(), DType::kF64), Tensor::zeros(state, DType::kF64),
          Tensor::zeros(q.shape(), DType::kF64), Tensor::zeros(k.shape(), DType::kF64),
          Tensor::zeros(k.shape(), DType::kF64), Tensor::zeros(state, DType::kF64)};
  auto at = [&](const Tensor& x, int64_t b, int64_t t, int64_t h, int64_t d) -> double& {
    return x.data<double>()[((b * c.T + t) * x.size(2) + h) * c.HS + d];
  };
  auto st = [&](const Tensor& s, int64_t b, int64_t h, int64_t d, int64_t e) -> double& {
    return s.data<double>()[((b * c.NH + h) * c.HS + d) * c.HS + e];
  };
  std::vector<double> A(c.T * c.T), dS(c.T * c.T);
  for (int64_t b = 0; b < c.B; ++b) {
    for (int64_t h = 0; h < c.NH; ++h) {
      const int64_t g = h / (c.NH / c.NKV);
      const double lambda = decay.empty() ? 1.0 : decay[h];
      std::vector<double> powers(c.T + 1);
      for (int64_t n = 0; n <= c.T; ++n) powers[n] = std::pow(lambda, static_cast<double>(n));
      auto pw = [&](int64_t n) { return powers[n]; };
      for (int64_t t = 0; t < c.T; ++t) {
        for (int64_t j = 0; j <= t; ++j) {
          double qk = 0, dv = 0;
          for (int64_t d = 0; d < c.HS; ++d) {
            qk += at(q, b, t, h, d) * at(k, b, j, g, d);
            dv += at(dout, b, t, h, d) * at(v, b, j, g, d);
          }
          A[t * c.T + j] = pw(t - j) * qk;
          dS[t * c.T + j] = pw(t - j) * dv;
        }
      }
      for (int64_t t = 0; t < c.T; ++t) {
        for (int64_t j = 0; j <= t; ++j) {
          for (int64_t d = 0; d < c.HS; ++d) {
            at(r.out, b, t, h, d) += A[t * c.T + j] * at(v, b, j, g, d);
            at(r.dq, b, t, h, d) += dS[t * c.T + j] * at(k, b, j, g, d);
            at(r.dk, b, j, g, d) += dS[t * c.T + j] * at(q, b, t, h, d);
            at(r.dv, b, j, g, d) += A[t * c.T + j] * at(dout, b, t, h, d);
          }
        }
        for (int64_t d = 0; d < c.HS; ++d) {
          for (int64_t e = 0; e < c.HS; ++e) {
            at(r.out, b, t, h, e) += pw(t + 1) * at(q, b, t, h, d) * st(P, b, h, d, e);
            at(r.dq, b, t, h, d) += pw(t + 1) * at(dout, b, t, h, e) * st(P, b, h, d, e);
            at(r.dk, b, t, g, d) += pw(c.T - 1 - t) * st(G, b, h, d, e) * at(v, b, t, g, e);
            at(r.dv, b, t, g, e) += pw(c.T - 1 - t) * st(G, b, h, d, e) * at(k, b, t, g, d);
            st(r.final_state, b, h, d, e) +=
                pw(c.T - 1 - t) * at(k, b, t, g, d) * at(v, b, t, g, e);
            st(r.dinitial, b, h, d, e) += pw(t + 1) * at(q, b, t, h, d) * at(dout, b, t, h, e);
          }
        }
      }
      for (int64_t d = 0; d < c.HS; ++d) {
        for (int64_t e = 0; e < c.HS; ++e) {
          st(r.final_state, b, h, d, e) += pw(c.T) * st(P, b, h, d, e);
          st(r.dinitial, b, h, d, e) += pw(c.T) * st(G, b, h, d, e);
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

// max |a - expected| / (1 + max |expected|): relative to the tensor's scale.
double scaled_diff(const Tensor& a, const Tensor& expected) {
  const Tensor a64 = to_dtype(a, DType::kF64);
  double m = 0, scale = 0;
  for (int64_t i = 0; i < a.numel(); ++i) {
    m = std::max(m, std::fabs(a64.data<double>()[i] - expected.data<double>()[i]));
    scale = std::max(scale, std::fabs(expected.data<double>()[i]));
  }
  return m / (1 + scale);
}

bool bit_equal(const Tensor& a, const Tensor& b) {
  return a.bytes() == b.bytes() && std::memcmp(a.view().raw(), b.view().raw(), a.bytes()) == 0;
}

// Runs the op; P and G may be undefined (no initial state, no final-state gradient).
Grads run_op(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& dout, const Tensor& P,
             const Tensor& G, const std::vector<double>& decay, int64_t chunk) {
  const Shape state{q.size(0), q.size(2), q.size(3), q.size(3)};
  Grads r{Tensor::empty_like(q), Tensor::empty(state, DType::kF64),
          Tensor::empty_like(q), Tensor::empty_like(k),
          Tensor::empty_like(v), Tensor::empty(state, DType::kF64)};
  const TensorView p = P.defined() ? P.view() : TensorView();
  const TensorView g = G.defined() ? G.view() : TensorView();
  ops::linear_attention_forward(q, k, v, r.out, decay, chunk, p, r.final_state);
  ops::linear_attention_backward(q, k, v, dout, r.dq, r.dk, r.dv, decay, chunk, p, g, r.dinitial);
  return r;
}

TEST(LinearAttention, MatchesRecurrentDefinitionOverGrid) {
  uint64_t seed = 1;
  int cases = 0;
  for (int64_t B : {1, 2})
    for (int64_t T : {1, 7, 64, 100})
      for (int64_t NKV : {4, 2, 1})
        for (int64_t HS : {8, 16})
          for (bool decay_on : {false, true})
            for (int64_t chunk : {16, 64}) {
              const Case c{B, T, 4, NKV, HS};
              const bool with_states = (++cases % 2) == 0;
              SCOPED_TRACE(::testing::Message()
                           << "B " << B << " T " << T << " NKV " << NKV << " HS " << HS << " decay "
                           << decay_on << " chunk " << chunk << " states " << with_states);
              const std::vector<double> decay =
                  decay_on ? ops::alibi_decays(c.NH) : std::vector<double>{};
              const double s = 0.5;
              const Tensor q = random_tensor({B, T, c.NH, HS}, DType::kF64, seed++, s);
              const Tensor k = random_tensor({B, T, NKV, HS}, DType::kF64, seed++, s);
              const Tensor v = random_tensor({B, T, NKV, HS}, DType::kF64, seed++, s);
              const Tensor dout = random_tensor({B, T, c.NH, HS}, DType::kF64, seed++, s);
              const Shape state{B, c.NH, HS, HS};
              const Tensor P = with_states ? random_tensor(state, DType::kF64, seed++)
                                           : Tensor::zeros(state, DType::kF64);
              const Tensor G = with_states ? random_tensor(state, DType::kF64, seed++)
                                           : Tensor::zeros(state, DType::kF64);
              const Grads ref = dense_reference(q, k, v, dout, P, G, decay, c);
              const Tensor none;
              const Grads r = run_op(q, k, v, dout, with_states ? P : none, with_states ? G : none,
                                     decay, chunk);
              EXPECT_LT(scaled_diff(r.out, ref.out), 1e-13);
              EXPECT_LT(scaled_diff(r.final_state, ref.final_state), 1e-13);
              EXPECT_LT(scaled_diff(r.dq, ref.dq), 1e-13);
              EXPECT_LT(scaled_diff(r.dk, ref.dk), 1e-13);
              EXPECT_LT(scaled_diff(r.dv, ref.dv), 1e-13);
              EXPECT_LT(scaled_diff(r.dinitial, ref.dinitial), 1e-13);
              if (B == 2 && HS == 16) {  // fp32 activations, fp64 states
                const Grads r32 =
                    run_op(to_dtype(q, DType::kF32), to_dtype(k, DType::kF32),
                           to_dtype(v, DType::kF32), to_dtype(dout, DType::kF32),
                           with_states ? P : none, with_states ? G : none, decay, chunk);
                EXPECT_LT(scaled_diff(r32.out, ref.out), 1e-5);
                EXPECT_LT(scaled_diff(r32.final_state, ref.final_state), 1e-5);
                EXPECT_LT(scaled_diff(r32.dq, ref.dq), 1e-5);
                EXPECT_LT(scaled_diff(r32.dk, ref.dk), 1e-5);
                EXPECT_LT(scaled_diff(r32.dv, ref.dv), 1e-5);
                EXPECT_LT(scaled_diff(r32.dinitial, ref.dinitial), 1e-5);
              }
            }
}

// Slices rows [t0, t1) of a (B, T, H, HS) tensor into a new tensor.
Tensor time_slice(const Tensor& x, int64_t t0, int64_t t1) {
  const int64_t B = x.size(0), T = x.size(1), row = x.size(2) * x.size(3);
  Tensor y = Tensor::empty({B, t1 - t0, x.size(2), x.size(3)}, x.dtype());
  for (int64_t b = 0; b < B; ++b)
    std::memcpy(y.data<double>() + b * (t1 - t0) * row, x.data<double>() + (b * T + t0) * row,
                (t1 - t0) * row * sizeof(double));
  return y;
}

// LASP-2 in miniature: the second half starts from the first half's final state, and the first
// half's backward starts from the gradient the second half returns for its initial state.
TEST(LinearAttention, HalvesWithCarriedStatesEqualOneRun) {
  const int64_t B = 2, T = 90, NH = 4, NKV = 2, HS = 8, split = 37, chunk = 16;
  for (bool decay_on : {false, true}) {
    SCOPED_TRACE(decay_on ? "decay" : "no decay");
    const std::vector<double> decay = decay_on ? ops::alibi_decays(NH) : std::vector<double>{};
    const Tensor q = random_tensor({B, T, NH, HS}, DType::kF64, 41, 0.5);
    const Tensor k = random_tensor({B, T, NKV, HS}, DType::kF64, 42, 0.5);
    const Tensor v = random_tensor({B, T, NKV, HS}, DType::kF64, 43, 0.5);
    const Tensor dout = random_tensor({B, T, NH, HS}, DType::kF64, 44, 0.5);
    const Tensor P = random_tensor({B, NH, HS, HS}, DType::kF64, 45);
    const Tensor G = random_tensor({B, NH, HS, HS}, DType::kF64, 46);
    const Grads full = run_op(q, k, v, dout, P, G, decay, chunk);
    const Shape state{B, NH, HS, HS};
    // Forward of the first half, then of the second seeded with its final state.
    Tensor o1 = Tensor::empty({B, split, NH, HS}, DType::kF64);
    Tensor mid = Tensor::empty(state, DType::kF64);
    ops::linear_attention_forward(time_slice(q, 0, split), time_slice(k, 0, split),
                                  time_slice(v, 0, split), o1, decay, chunk, P, mid);
    const Grads second =
        run_op(time_slice(q, split, T), time_slice(k, split, T), time_slice(v, split, T),
               time_slice(dout, split, T), mid, G, decay, chunk);
    const Grads first =
        run_op(time_slice(q, 0, split), time_slice(k, 0, split), time_slice(v, 0, split),
               time_slice(dout, 0, split), P, second.dinitial, decay, chunk);
    EXPECT_LT(scaled_diff(second.final_state, full.final_state), 1e-13);
    EXPECT_LT(scaled_diff(first.dinitial, full.dinitial), 1e-13);
    const std::pair<const Tensor*, const Tensor*> parts[] = {{&first.out, &second.out},
                                                             {&first.dq, &second.dq},
                                                             {&first.dk, &second.dk},
                                                             {&first.dv, &second.dv}};
    const Tensor* wholes[] = {&full.out, &full.dq, &full.dk, &full.dv};
    for (int i = 0; i < 4; ++i) {
      EXPECT_LT(scaled_diff(*parts[i].first, time_slice(*wholes[i], 0, split)), 1e-13);
      EXPECT_LT(scaled_diff(*parts[i].second, time_slice(*wholes[i], split, T)), 1e-13);
    }
  }
}

TEST(LinearAttention, FiniteDifferenceGradients) {
  for (bool decay_on : {false, true}) {
    const int64_t B = 2, T = 40, NH = 4, NKV = 2, HS = 8, chunk = 16;
    const std::vector<double> decay = decay_on ? ops::alibi_decays(NH) : std::vector<double>{};
    ParameterSet none;
    none.allocate(DType::kF64);
    const Tensor q = random_tensor({B, T, NH, HS}, DType::kF64, 51, 0.5);
    const Tensor k = random_tensor({B, T, NKV, HS}, DType::kF64, 52, 0.5);
    const Tensor v = random_tensor({B, T, NKV, HS}, DType::kF64, 53, 0.5);
    const Tensor P = random_tensor({B, NH, HS, HS}, DType::kF64, 54, 0.5);
    Tensor dinitial = Tensor::empty(P.shape(), DType::kF64);
    testing::GradCheckCase gc;
    gc.params = &none;
    gc.inputs = {q, k, v, P};
    gc.input_names = {"q", "k", "v", "initial_state"};
    gc.forward = [&](LayerContext&) {
      Tensor out = Tensor::empty_like(q);
      ops::linear_attention_forward(q, k, v, out, decay, chunk, P);
      return out;
    };
    gc.backward = [&](LayerContext&, const Tensor& dout) {
      std::vector<Tensor> g{Tensor::empty_like(q), Tensor::empty_like(k), Tensor::empty_like(v),
                            Tensor::empty(P.shape(), DType::kF64)};
      ops::linear_attention_backward(q, k, v, dout, g[0], g[1], g[2], decay, chunk, P, {}, g[3]);
      return g;
    };
    testing::expect_gradients_match(gc);
  }
}

TEST(LinearAttention, DeterministicAcrossRunsAndThreadCounts) {
  const int64_t B = 2, T = 100, NH = 4, NKV = 2, HS = 16;
  const std::vector<double> decay = ops::alibi_decays(NH);
  const Tensor q = random_tensor({B, T, NH, HS}, DType::kF32, 61);
  const Tensor k = random_tensor({B, T, NKV, HS}, DType::kF32, 62);
  const Tensor v = random_tensor({B, T, NKV, HS}, DType::kF32, 63);
  const Tensor dout = random_tensor({B, T, NH, HS}, DType::kF32, 64);
  const Tensor P = random_tensor({B, NH, HS, HS}, DType::kF64, 65);
  const int threads = omp_get_max_threads();
  omp_set_num_threads(2);
  const Grads a = run_op(q, k, v, dout, P, P, decay, 16);
  const Grads b = run_op(q, k, v, dout, P, P, decay, 16);
  omp_set_num_threads(1);
  const Grads one = run_op(q, k, v, dout, P, P, decay, 16);
  omp_set_num_threads(threads);
  for (const Grads* r : {&b, &one}) {
    EXPECT_TRUE(bit_equal(a.out, r->out));
    EXPECT_TRUE(bit_equal(a.final_state, r->final_state));
    EXPECT_TRUE(bit_equal(a.dq, r->dq));
    EXPECT_TRUE(bit_equal(a.dk, r->dk));
    EXPECT_TRUE(bit_equal(a.dv, r->dv));
    EXPECT_TRUE(bit_equal(a.dinitial, r->dinitial));
  }
}

TEST(LinearAttention, DecaysAndMetaShapes) {
  const std::vector<double> d = ops::alibi_decays(4);
  ASSERT_EQ(d.size(), 4u);
  for (int h = 0; h < 4; ++h) EXPECT_DOUBLE_EQ(d[h], std::exp(-std::pow(2.0, -2.0 * (h + 1))));
  const Device meta = Device::meta();
  const Tensor q = Tensor::empty({2, 5, 4, 8}, DType::kF32, meta);
  const Tensor kv = Tensor::empty({2, 5, 2, 8}, DType::kF32, meta);
  const Tensor s = Tensor::empty({2, 4, 8, 8}, DType::kF64, meta);
  EXPECT_NO_THROW(ops::linear_attention_forward(q, kv, kv, q, d, 4, s, s));
  EXPECT_NO_THROW(ops::linear_attention_backward(q, kv, kv, q, q, kv, kv, d, 4, s, s, s));
  const Tensor s32 = Tensor::empty({2, 4, 8, 8}, DType::kF32, meta);
  EXPECT_THROW(ops::linear_attention_forward(q, kv, kv, q, d, 4, s32), ShapeError);
  EXPECT_THROW(ops::linear_attention_forward(q, kv, kv, q, d, 0), ShapeError);
  EXPECT_THROW(ops::linear_attention_forward(q, kv, kv, q, std::vector<double>{0.5}, 4),
               ShapeError);
  const Tensor bad = Tensor::empty({2, 5, 3, 8}, DType::kF32, meta);
  EXPECT_THROW(ops::linear_attention_forward(q, bad, bad, q, d, 4), ShapeError);
}

}  // namespace
}  // namespace memento
