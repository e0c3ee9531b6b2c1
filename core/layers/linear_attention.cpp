#include "core/layers/linear_attention.h"

#include <vector>

#include "core/ops/dispatch.h"
#include "core/ops/linear_attention.h"
#include "core/ops/rmsnorm.h"

namespace memento {
namespace {

std::vector<double> decays(const AttentionDims& dims, const LinearAttentionOptions& options) {
  return options.decay ? ops::alibi_decays(dims.NH) : std::vector<double>{};
}

}  // namespace

LinearAttention::LinearAttention(ParameterSet& params, const std::string& name, AttentionDims dims,
                                 LinearAttentionOptions options, float init_std, float out_init_std)
    : name_(name),
      dims_(dims),
      options_(options),
      qkv_(params, name, dims, init_std),
      o_proj_(params, name + ".o_proj", dims.NH * dims.HS, dims.C, out_init_std) {
  MEMENTO_EXPECT(options.chunk > 0, ShapeError, "LinearAttention ", name,
                 ": chunk must be positive, got ", options.chunk);
  if (options.output_norm)
    o_norm_ = params.declare(name + ".o_norm.weight", Shape{dims.HS}, ParamInit::ones(), false);
}

// With the output norm, o_proj's input (the normalised output) is not saved: backward rebuilds
// it from the saved attention output, so the layer keeps one (B, T, NH, HS) tensor, not two.
Tensor LinearAttention::forward(LayerContext& ctx, const Tensor& x) {
  const int64_t B = x.size(0), T = x.size(1), NH = dims_.NH, HS = dims_.HS;
  const auto [q, k, v] = qkv_.forward(ctx, x);  // (B, T, NH, HS), (B, T, NKV, HS) x 2
  const Tensor att = Tensor::empty(q.shape(), q.dtype(), q.device());  // (B, T, NH, HS)
  ops::linear_attention_forward(q, k, v, att, decays(dims_, options_), options_.chunk);
  Tensor y;  // (B, T, C)
  if (options_.output_norm) {
    const Tensor normed = Tensor::empty(att.shape(), att.dtype(), att.device());  // (B, T, NH, HS)
    const Tensor rstd =
        Tensor::empty({B * T * NH}, ops::stat_dtype(att.dtype()), att.device());  // (B*T*NH)
    ops::rmsnorm_forward(att, ctx.params.value(o_norm_), options_.output_norm_eps, normed, rstd);
    y = o_proj_.forward_unsaved(ctx, normed.reshape({B, T, NH * HS}));
  } else {
    y = o_proj_.forward(ctx, att.reshape({B, T, NH * HS}));
  }
  if (ctx.training) {
    ctx.store.save(name_ + "/q", q);
    ctx.store.save(name_ + "/k", k);
    ctx.store.save(name_ + "/v", v);
    if (options_.output_norm) ctx.store.save(name_ + "/att", att);
  }
  return y;
}

Tensor LinearAttention::backward(LayerContext& ctx, const Tensor& dy) {
  const Tensor q = ctx.store.take(name_ + "/q");  // (B, T, NH, HS)
  const Tensor k = ctx.store.take(name_ + "/k");  // (B, T, NKV, HS)
  const Tensor v = ctx.store.take(name_ + "/v");  // (B, T, NKV, HS)
  const int64_t B = q.size(0), T = q.size(1), NH = dims_.NH, HS = dims_.HS;
  Tensor datt;  // (B, T, NH, HS)
  if (options_.output_norm) {
    const Tensor att = ctx.store.take(name_ + "/att");  // (B, T, NH, HS)
    const TensorView weight = ctx.params.value(o_norm_);
    const Tensor normed = Tensor::empty(att.shape(), att.dtype(), att.device());
    const Tensor rstd = Tensor::empty({B * T * NH}, ops::stat_dtype(att.dtype()), att.device());
    ops::rmsnorm_forward(att, weight, options_.output_norm_eps, normed, rstd);
    const Tensor dnormed = o_proj_.backward_input(ctx, dy).reshape(att.shape());
    o_proj_.backward_weight(ctx, dy, normed.reshape({B, T, NH * HS}));  // the rebuilt input
    datt = Tensor::empty(att.shape(), att.dtype(), dnormed.device());
    ops::rmsnorm_backward(dnormed, att, weight, rstd, datt, ctx.params.grad(o_norm_));
  } else {
    datt = o_proj_.backward(ctx, dy).reshape(q.shape());
  }
  const Device device = datt.device();
  const Tensor dq = Tensor::empty(q.shape(), q.dtype(), device);  // (B, T, NH, HS)
  const Tensor dk = Tensor::empty(k.shape(), k.dtype(), device);  // (B, T, NKV, HS)
  const Tensor dv = Tensor::empty(v.shape(), v.dtype(), device);  // (B, T, NKV, HS)
  ops::linear_attention_backward(q, k, v, datt, dq, dk, dv, decays(dims_, options_),
                                 options_.chunk);
  return qkv_.backward(ctx, dq, dk, dv);  // (B, T, C)
}

}  // namespace memento
