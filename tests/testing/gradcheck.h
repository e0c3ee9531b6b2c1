// Finite-difference gradient checks in fp64 for layers and models with explicit backward.
// The scalar checked is loss = sum(out * w) for a fixed random w, so dout = w.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <string>
#include <vector>

#include "core/layers/layer.h"
#include "core/rng.h"
#include "memory/activation_store.h"

namespace memento::testing {

// A tensor of the given shape filled with deterministic normal values times `scale`.
inline Tensor random_tensor(Shape shape, DType dtype, uint64_t seed, double scale = 1.0) {
  Tensor t = Tensor::empty(shape, dtype);
  for (int64_t i = 0; i < t.numel(); ++i) {
    const double v = scale * normal01(seed, 7, static_cast<uint64_t>(i));
    if (dtype == DType::kF64) {
      t.data<double>()[i] = v;
    } else {
      t.data<float>()[i] = static_cast<float>(v);
    }
  }
  return t;
}

struct GradCheckCase {
  ParameterSet* params = nullptr;  // fp64, allocated and initialised
  std::vector<TensorView> inputs;  // fp64 inputs whose gradients backward returns
  std::vector<std::string> input_names;
  // Runs the forward pass and returns the output.
  std::function<Tensor(LayerContext&)> forward;
  // Runs backward from dout and returns the gradients of `inputs`, in order.
  std::function<std::vector<Tensor>(LayerContext&, const Tensor& dout)> backward;
  int max_elements_per_tensor = 48;  // checked elements per tensor, spread over it
  double step = 1e-5;
  double rtol = 1e-6;
  double atol = 1e-9;
};

inline double dot(const Tensor& a, const Tensor& b) {
  double s = 0;
  for (int64_t i = 0; i < a.numel(); ++i) s += a.data<double>()[i] * b.data<double>()[i];
  return s;
}

// Checks every parameter gradient and every input gradient; reports each mismatch with the
// tensor name and element index through gtest.
inline void expect_gradients_match(GradCheckCase& c) {
  KeepActivationStore store;
  LayerContext train_ctx{*c.params, store, true};
  c.params->zero_grads();
  const Tensor out = c.forward(train_ctx);
  const Tensor w = random_tensor(out.shape(), DType::kF64, 99);
  const std::vector<Tensor> input_grads = c.backward(train_ctx, w);
  EXPECT_TRUE(store.empty()) << "backward left saved activations in the store";
  ASSERT_EQ(input_grads.size(), c.inputs.size());

  auto loss = [&]() {
    KeepActivationStore eval_store;
    LayerContext ctx{*c.params, eval_store, false};
    const Tensor o = c.forward(ctx);
    EXPECT_EQ(eval_store.live_bytes(), 0u) << "forward with training = false saved activations";
    return dot(o, w);
  };
  auto check = [&](const TensorView& value, const TensorView& analytic, const std::string& name) {
    const int64_t n = value.numel();
    const int64_t stride = std::max<int64_t>(1, n / c.max_elements_per_tensor);
    for (int64_t i = 0; i < n; i += stride) {
      double& x = value.data<double>()[i];
      const double saved = x;
      x = saved + c.step;
      const double up = loss();
      x = saved - c.step;
      const double down = loss();
      x = saved;
      const double numeric = (up - down) / (2 * c.step);
      const double a = analytic.data<double>()[i];
      EXPECT_LE(std::fabs(a - numeric),
                c.atol + c.rtol * std::max(std::fabs(a), std::fabs(numeric)))
          << name << "[" << i << "]: analytic " << a << ", finite difference " << numeric;
    }
  };
  for (const auto& e : c.params->entries()) {
    const auto* entry = &e;
    const ParamRef ref{static_cast<int>(entry - c.params->entries().data())};
    check(c.params->value(ref), c.params->grad(ref), e.name);
  }
  for (size_t k = 0; k < c.inputs.size(); ++k) {
    check(c.inputs[k], input_grads[k],
          k < c.input_names.size() ? c.input_names[k] : "input" + std::to_string(k));
  }
}

}  // namespace memento::testing
