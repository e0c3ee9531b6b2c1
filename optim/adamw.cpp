#include "optim/adamw.h"

#include <algorithm>
#include <cmath>

namespace memento::optim {
namespace {

template <typename T>
void adamw_range(T* p, const T* g, T* m, T* v, int64_t n, double lr, double wd,
                 const AdamWOptions& o, double bias1, double bias2) {
  const T b1 = static_cast<T>(o.beta1), b2 = static_cast<T>(o.beta2);
  const T step_size = static_cast<T>(lr / bias1);
  const T inv_sqrt_bias2 = static_cast<T>(1.0 / std::sqrt(bias2));
  const T eps = static_cast<T>(o.eps);
  const T decay = static_cast<T>(1.0 - lr * wd);
#pragma omp parallel for simd schedule(static)
  for (int64_t i = 0; i < n; ++i) {
    m[i] = b1 * m[i] + (1 - b1) * g[i];
    v[i] = b2 * v[i] + (1 - b2) * g[i] * g[i];
    p[i] = p[i] * decay - step_size * m[i] / (std::sqrt(v[i]) * inv_sqrt_bias2 + eps);
  }
}

}  // namespace

AdamW::AdamW(const ParameterSet& params, AdamWOptions options, FlatRange shard)
    : options_(options), shard_(shard.size() > 0 ? shard : FlatRange{0, params.padded_numel()}) {
  MEMENTO_CHECK(params.allocated(), "AdamW needs allocated parameters");
  MEMENTO_CHECK(shard_.begin >= 0 && shard_.end <= params.padded_numel(), "shard [", shard_.begin,
                ", ", shard_.end, ") outside the ", params.padded_numel(), " parameters");
  const DType dtype = params.dtype() == DType::kF64 ? DType::kF64 : DType::kF32;
  exp_avg_ = Tensor::zeros(Shape{shard_.size()}, dtype, params.device());
  exp_avg_sq_ = Tensor::zeros(Shape{shard_.size()}, dtype, params.device());
}

void AdamW::step(ParameterSet& params, double lr) {
  ++step_;
  if (params.device().is_meta()) return;
  const double bias1 = 1.0 - std::pow(options_.beta1, static_cast<double>(step_));
  const double bias2 = 1.0 - std::pow(options_.beta2, static_cast<double>(step_));
  for (const auto& e : params.entries()) {
    // The part of this parameter inside the shard.
    const int64_t begin = std::max(e.offset, shard_.begin);
    const int64_t end = std::min(e.offset + e.shape.numel(), shard_.end);
    if (begin >= end) continue;
    const double wd = e.weight_decay ? options_.weight_decay : 0.0;
    const int64_t n = end - begin;
    const int64_t s = begin - shard_.begin;  // offset into the state buffers
    if (params.dtype() == DType::kF64) {
      adamw_range(params.flat_values().data<double>() + begin,
                  params.flat_grads().data<double>() + begin, exp_avg_.data<double>() + s,
                  exp_avg_sq_.data<double>() + s, n, lr, wd, options_, bias1, bias2);
    } else {
      adamw_range(params.flat_values().data<float>() + begin,
                  params.flat_grads().data<float>() + begin, exp_avg_.data<float>() + s,
                  exp_avg_sq_.data<float>() + s, n, lr, wd, options_, bias1, bias2);
    }
  }
}

}  // namespace memento::optim
