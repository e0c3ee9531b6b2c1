#include "optim/adamw.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "core/ops/elementwise.h"
#include "core/parameters.h"

namespace memento::optim {
namespace {

// AdamW for one scalar, in double, straight from Loshchilov & Hutter (Algorithm 2) with
// Adam's bias correction: the test's reference.
struct ScalarAdamW {
  double p, m = 0, v = 0;
  double g_max = 0;  // the largest |g| seen: the scale of m (and, squared, of v)
  void step(double g, int t, double lr, const AdamWOptions& o, bool decay) {
    g_max = std::max(g_max, std::fabs(g));
    m = o.beta1 * m + (1 - o.beta1) * g;
    v = o.beta2 * v + (1 - o.beta2) * g * g;
    const double m_hat = m / (1 - std::pow(o.beta1, t));
    const double v_hat = v / (1 - std::pow(o.beta2, t));
    const double wd = decay ? o.weight_decay : 0.0;
    p = p - lr * (m_hat / (std::sqrt(v_hat) + o.eps) + wd * p);
  }
};

struct Decl {
  std::string name;
  Shape shape;
  bool weight_decay;
};

template <typename T>
void run_against_reference(DType dtype, const AdamWOptions& options, double value_tol,
                           double state_tol) {
  const std::vector<Decl> decls = {
      {"model.layers.0.mlp.up_proj.weight", Shape{6, 5}, true},
      {"model.layers.0.input_layernorm.weight", Shape{5}, false},
      {"lm_head.weight", Shape{3, 7}, true},
      {"model.norm.weight", Shape{9}, false},
  };
  ParameterSet ps;
  for (const Decl& d : decls) ps.declare(d.name, d.shape, ParamInit::zeros(), d.weight_decay);
  ps.allocate(dtype);

  std::mt19937 gen(77);
  std::uniform_real_distribution<double> unif(-1.0, 1.0);
  std::vector<ScalarAdamW> ref;
  std::vector<bool> decays;
  std::vector<int64_t> index;  // flat offsets of every element
  T* p = ps.flat_values().data<T>();
  for (const auto& e : ps.entries()) {
    for (int64_t i = 0; i < e.shape.numel(); ++i) {
      const auto x = static_cast<T>(unif(gen) * 2);
      p[e.offset + i] = x;
      ref.push_back({static_cast<double>(x)});
      decays.push_back(e.weight_decay);
      index.push_back(e.offset + i);
    }
  }

  AdamW opt(ps, options);
  EXPECT_EQ(opt.exp_avg().dtype(), DTypeOf<T>::value);
  EXPECT_EQ(opt.exp_avg_sq().dtype(), DTypeOf<T>::value);
  EXPECT_EQ(opt.exp_avg().numel(), ps.padded_numel());
  EXPECT_EQ(opt.state_bytes(), 2 * static_cast<size_t>(ps.padded_numel()) * sizeof(T));
  EXPECT_EQ(opt.step_count(), 0);

  const double lrs[] = {1e-2, 3e-2, 5e-3, 1e-2, 2e-2, 1e-3, 1e-2};
  T* g = ps.flat_grads().data<T>();
  int t = 0;
  for (double lr : lrs) {
    ++t;
    for (size_t k = 0; k < ref.size(); ++k) {
      // Gradients of very different sizes, including ones small enough for eps to matter and
      // zeros (after some non-zero steps the state still moves the parameter).
      double gv = unif(gen);
      if (k % 5 == 1) gv *= 1e-7;
      if (k % 7 == 2 && t > 2) gv = 0;
      if (k % 11 == 3) gv *= 1e3;
      const auto gt = static_cast<T>(gv);
      g[index[k]] = gt;
      ref[k].step(static_cast<double>(gt), t, lr, options, decays[k]);
    }
    opt.step(ps, lr);
    EXPECT_EQ(opt.step_count(), t);
    const T* m = opt.exp_avg().template data<T>();
    const T* v = opt.exp_avg_sq().template data<T>();
    for (size_t k = 0; k < ref.size(); ++k) {
      const int64_t i = index[k];
      ASSERT_NEAR(p[i], ref[k].p, value_tol * (std::fabs(ref[k].p) + lr))
          << "step " << t << " element " << k << (decays[k] ? " (decayed)" : " (no decay)");
      ASSERT_NEAR(m[i], ref[k].m, state_tol * ref[k].g_max) << "m, step " << t << " element " << k;
      ASSERT_NEAR(v[i], ref[k].v, state_tol * ref[k].g_max * ref[k].g_max)
          << "v, step " << t << " element " << k;
    }
  }
}

TEST(AdamW, MatchesTheScalarReferenceInF64) {
  run_against_reference<double>(DType::kF64, AdamWOptions{}, 1e-12, 1e-12);
}

TEST(AdamW, MatchesTheScalarReferenceInF32) {
  run_against_reference<float>(DType::kF32, AdamWOptions{}, 2e-6, 2e-6);
}

TEST(AdamW, OtherHyperparametersAndALargeEps) {
  // A large eps makes its placement (outside the square root, after bias correction) visible.
  AdamWOptions o;
  o.beta1 = 0.8;
  o.beta2 = 0.99;
  o.eps = 1e-3;
  o.weight_decay = 0.5;
  run_against_reference<double>(DType::kF64, o, 1e-12, 1e-12);
  o.weight_decay = 0.0;
  run_against_reference<float>(DType::kF32, o, 2e-6, 2e-6);
}

TEST(AdamW, FirstStepMovesEveryParameterByAboutLr) {
  // With bias correction, step 1 gives m_hat / sqrt(v_hat) = sign(g): an update of lr.
  ParameterSet ps;
  const ParamRef w = ps.declare("w", Shape{4}, ParamInit::zeros(), false);
  ps.allocate(DType::kF64);
  const double grads[] = {1e-3, -2.0, 50.0, -1e-5};
  for (int i = 0; i < 4; ++i) ps.grad(w).data<double>()[i] = grads[i];
  AdamW opt(ps, AdamWOptions{});
  opt.step(ps, 0.1);
  for (int i = 0; i < 4; ++i)
    EXPECT_NEAR(ps.value(w).data<double>()[i], grads[i] > 0 ? -0.1 : 0.1, 1e-3) << i;
}

TEST(AdamW, WeightDecayIsDecoupledAndOnlyWhereDeclared) {
  // Zero gradients: only the decay moves parameters, by the factor (1 - lr * wd) per step.
  ParameterSet ps;
  const ParamRef a = ps.declare("decayed", Shape{3}, ParamInit::ones(), true);
  const ParamRef b = ps.declare("kept", Shape{3}, ParamInit::ones(), false);
  ps.allocate(DType::kF64);
  ps.initialize(1);
  AdamWOptions o;
  o.weight_decay = 0.1;
  AdamW opt(ps, o);
  for (int s = 0; s < 3; ++s) opt.step(ps, 0.5);
  for (int i = 0; i < 3; ++i) {
    EXPECT_NEAR(ps.value(a).data<double>()[i], std::pow(1 - 0.5 * 0.1, 3), 1e-15);
    EXPECT_EQ(ps.value(b).data<double>()[i], 1.0);
  }
}

TEST(AdamW, StepCountIsCheckpointableAndDrivesBiasCorrection) {
  // Restoring step_count (as a resume does) continues the bias correction from that step.
  auto make = [](ParameterSet& ps) {
    ps.declare("w", Shape{1}, ParamInit::zeros(), false);
    ps.allocate(DType::kF64);
  };
  ParameterSet ps;
  make(ps);
  AdamW opt(ps, AdamWOptions{});
  opt.step_count() = 9;  // the next update is the 10th
  ps.flat_grads().data<double>()[0] = 1.0;
  opt.step(ps, 1.0);
  EXPECT_EQ(opt.step_count(), 10);
  ScalarAdamW ref{0.0};
  ref.step(1.0, 10, 1.0, AdamWOptions{}, false);
  EXPECT_NEAR(ps.flat_values().data<double>()[0], ref.p, 1e-14);
  EXPECT_GT(std::fabs(ref.p + 1.0), 0.1) << "the reference differs from a step-1 update";
}

// The clipping factor fused into the update: the same bits as scaling the gradients first, and
// the stored gradients are left unscaled.
TEST(AdamW, GradScaleEqualsScalingTheGradientsFirst) {
  for (DType dtype : {DType::kF32, DType::kF64}) {
    auto make = [&](ParameterSet& ps) {
      ps.declare("w", Shape{37, 5}, ParamInit::normal(0.5f), true);
      ps.declare("norm", Shape{5}, ParamInit::ones(), false);
      ps.allocate(dtype);
      ps.initialize(3);
    };
    ParameterSet fused, scaled;
    make(fused);
    make(scaled);
    AdamW fused_opt(fused, AdamWOptions{}), scaled_opt(scaled, AdamWOptions{});
    std::mt19937 rng(7);
    std::normal_distribution<double> normal;
    for (int step = 0; step < 3; ++step) {
      const double factor = step == 1 ? 1.0 : 0.37 + step;
      const int64_t n = fused.padded_numel();
      for (int64_t i = 0; i < n; ++i) {
        const double g = normal(rng);
        if (dtype == DType::kF32) {
          fused.flat_grads().data<float>()[i] = static_cast<float>(g);
          scaled.flat_grads().data<float>()[i] = static_cast<float>(g);
        } else {
          fused.flat_grads().data<double>()[i] = g;
          scaled.flat_grads().data<double>()[i] = g;
        }
      }
      const std::vector<char> grads_before(
          static_cast<const char*>(fused.flat_grads().raw()),
          static_cast<const char*>(fused.flat_grads().raw()) + fused.flat_grads().bytes());
      fused_opt.step(fused, 1e-2, factor);
      ops::scale_(scaled.flat_grads(), factor);
      scaled_opt.step(scaled, 1e-2);
      EXPECT_EQ(std::memcmp(fused.flat_values().raw(), scaled.flat_values().raw(),
                            fused.flat_values().bytes()),
                0)
          << dtype_name(dtype) << " step " << step;
      EXPECT_EQ(std::memcmp(fused_opt.exp_avg_sq().raw(), scaled_opt.exp_avg_sq().raw(),
                            fused_opt.exp_avg_sq().bytes()),
                0);
      EXPECT_EQ(std::memcmp(fused.flat_grads().raw(), grads_before.data(), grads_before.size()), 0);
    }
  }
}

TEST(AdamW, MetaParametersOnlyCountSteps) {
  ParameterSet ps;
  ps.declare("w", Shape{1000, 1000}, ParamInit::normal(0.02f));
  ps.allocate(DType::kF32, Device::meta());
  AdamW opt(ps, AdamWOptions{});
  EXPECT_TRUE(opt.exp_avg().is_meta());
  EXPECT_EQ(opt.state_bytes(), 2u * 1000u * 1000u * 4u);
  opt.step(ps, 1e-3);
  EXPECT_EQ(opt.step_count(), 1);
}

}  // namespace
}  // namespace memento::optim
