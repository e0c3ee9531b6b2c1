#include "optim/adamw.h"

#include <algorithm>
#include <cmath>

#ifdef MEMENTO_WITH_CUDA
#include "core/cuda/adamw.h"
#endif

namespace memento::optim {
namespace {

template <typename T>
void adamw_range(T* p, const T* g, T* m, T* v, int64_t n, double lr, double wd,
                 const AdamWOptions& o, double bias1, double bias2, double grad_scale) {
  const T b1 = static_cast<T>(o.beta1), b2 = static_cast<T>(o.beta2);
  const T step_size = static_cast<T>(lr / bias1);
  const T inv_sqrt_bias2 = static_cast<T>(1.0 / std::sqrt(bias2));
  const T eps = static_cast<T>(o.eps);
  const T decay = static_cast<T>(1.0 - lr * wd);
  const T scale = static_cast<T>(grad_scale);
#pragma omp parallel for simd schedule(static)
  for (int64_t i = 0; i < n; ++i) {
    const T gi = g[i] * scale;
    m[i] = b1 * m[i] + (1 - b1) * gi;
    v[i] = b2 * v[i] + (1 - b2) * gi * gi;
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
  ranges_ = {shard_};
}

std::vector<OptimizerState> AdamW::states() const {
  return {{"exp_avg", exp_avg_, shard_}, {"exp_avg_sq", exp_avg_sq_, shard_}};
}

void AdamW::step(ParameterSet& params, double lr, double grad_scale) {
  ++step_;
  if (params.device().is_meta()) return;
#ifdef MEMENTO_WITH_CUDA
  if (params.device().kind == DeviceKind::kCuda) return step_cuda(params, lr, grad_scale);
#endif
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
                  exp_avg_sq_.data<double>() + s, n, lr, wd, options_, bias1, bias2, grad_scale);
    } else {
      adamw_range(params.flat_values().data<float>() + begin,
                  params.flat_grads().data<float>() + begin, exp_avg_.data<float>() + s,
                  exp_avg_sq_.data<float>() + s, n, lr, wd, options_, bias1, bias2, grad_scale);
    }
  }
}

#ifdef MEMENTO_WITH_CUDA
// On the GPU the shard is cut into maximal runs of parameters with the same weight decay (the
// alignment padding between them is zero and stays zero), one fused kernel per run, which also
// writes the bf16 compute copy when the parameters have one.
void AdamW::step_cuda(ParameterSet& params, double lr, double grad_scale) {
  MEMENTO_CHECK(params.dtype() == DType::kF32, "AdamW on the GPU: parameters are ",
                dtype_name(params.dtype()), ", expected f32 masters");
  const bool bf16_copy = params.has_compute_copy();
  MEMENTO_CHECK(!bf16_copy || params.compute_dtype() == DType::kBF16,
                "AdamW on the GPU: compute copy is ", dtype_name(params.compute_dtype()),
                ", expected bf16");
  auto update = [&](int64_t begin, int64_t end, bool decay) {
    begin = std::max(begin, shard_.begin);
    end = std::min(end, shard_.end);
    if (begin >= end) return;
    const Shape shape{end - begin};
    const int64_t s = begin - shard_.begin;
    ops::cuda::AdamWHyper h;
    h.lr = lr;
    h.beta1 = options_.beta1;
    h.beta2 = options_.beta2;
    h.eps = options_.eps;
    h.weight_decay = decay ? options_.weight_decay : 0.0;
    h.step = step_;
    h.grad_scale = grad_scale;
    ops::cuda::adamw_step(
        params.flat_values().flat_range(begin, shape), params.flat_grads().flat_range(begin, shape),
        exp_avg_.view().flat_range(s, shape), exp_avg_sq_.view().flat_range(s, shape),
        bf16_copy ? params.flat_compute().flat_range(begin, shape) : TensorView(), h);
  };
  const auto& entries = params.entries();
  size_t first = 0;
  for (size_t i = 1; i <= entries.size(); ++i) {
    if (i < entries.size() && entries[i].weight_decay == entries[first].weight_decay) continue;
    update(entries[first].offset, i < entries.size() ? entries[i].offset : params.padded_numel(),
           entries[first].weight_decay);
    first = i;
  }
}
#endif

}  // namespace memento::optim
