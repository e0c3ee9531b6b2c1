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
      q_proj_(params, name + ".q_proj", dims.C, dims.NH * dims.HS, init_std),
      k_proj_(params, name + ".k_proj", dims.C, dims.NKV * dims.HS, init_std),
      v_proj_(params, name + ".v_proj", dims.C, dims.NKV * dims.HS, init_std),
      o_proj_(params, name + ".o_proj", dims.NH * dims.HS, dims.C, out_init_std) {
  MEMENTO_EXPECT(dims.NH > 0 && dims.NKV > 0 && dims.NH % dims.NKV == 0, ShapeError,
                 "LinearAttention ", name, ": NH ", dims.NH, " must be a multiple of NKV ",
                 dims.NKV);
  MEMENTO_EXPECT(options.chunk > 0, ShapeError, "LinearAttention ", name,
                 ": chunk must be positive, got ", options.chunk);
  if (options.output_norm)
    o_norm_ = params.declare(name + ".o_norm.weight", Shape{dims.HS}, ParamInit::ones(), false);
}

// With the output norm, o_proj's input (the normalised output) is not saved: backward rebuilds
// it from the saved attention output, so the layer keeps one (B, T, NH, HS) tensor, not two.
Tensor LinearAttention::forward(LayerContext& ctx, const Tensor& x) {
  MEMENTO_EXPECT(x.shape().ndim() == 3 && x.size(2) == dims_.C, ShapeError, "LinearAttention ",
                 name_, ": x: expected (B, T, ", dims_.C, "), got ", x.shape().str());
  const int64_t B = x.size(0), T = x.size(1), NH = dims_.NH, NKV = dims_.NKV, HS = dims_.HS;
  const Tensor q = q_proj_.forward(ctx, x).reshape({B, T, NH, HS});    // (B, T, NH, HS)
  const Tensor k = k_proj_.forward(ctx, x).reshape({B, T, NKV, HS});   // (B, T, NKV, HS)
  const Tensor v = v_proj_.forward(ctx, x).reshape({B, T, NKV, HS});   // (B, T, NKV, HS)
  const Tensor att = Tensor::empty(q.shape(), q.dtype(), q.device());  // (B, T, NH, HS)
  ops::linear_attention_forward(q, k, v, att, decays(dims_, options_), options_.chunk);
  Tensor y;  // (B, T, C)
  if (options_.output_norm) {
    const Tensor normed = Tensor::empty(att.shape(), att.dtype(), att.device());  // (B, T, NH, HS)
    const Tensor rstd =
        Tensor::empty({B * T * NH}, ops::stat_dtype(att.dtype()), att.device());  // (B*T*NH)
    ops::rmsnorm_forward(att, ctx.params.value(o_norm_), options_.output_norm_eps, normed, rstd);
    LayerContext no_save{ctx.params, ctx.store, false};
    y = o_proj_.forward(no_save, normed.reshape({B, T, NH * HS}));
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
  const int64_t B = q.size(0), T = q.size(1), NH = dims_.NH, NKV = dims_.NKV, HS = dims_.HS;
  Tensor datt;  // (B, T, NH, HS)
  if (options_.output_norm) {
    const Tensor att = ctx.store.take(name_ + "/att");  // (B, T, NH, HS)
    const TensorView weight = ctx.params.value(o_norm_);
    const Tensor normed = Tensor::empty(att.shape(), att.dtype(), att.device());
    const Tensor rstd = Tensor::empty({B * T * NH}, ops::stat_dtype(att.dtype()), att.device());
    ops::rmsnorm_forward(att, weight, options_.output_norm_eps, normed, rstd);
    // Hand the rebuilt input to o_proj under the key its forward would have used.
    ctx.store.save(name_ + ".o_proj/x", normed.reshape({B, T, NH * HS}));
    const Tensor dnormed = o_proj_.backward(ctx, dy).reshape(att.shape());
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
  Tensor dx = q_proj_.backward(ctx, dq.reshape({B, T, NH * HS}));  // (B, T, C)
  k_proj_.backward_accumulate(ctx, dk.reshape({B, T, NKV * HS}), dx);
  v_proj_.backward_accumulate(ctx, dv.reshape({B, T, NKV * HS}), dx);
  return dx;
}

}  // namespace memento
