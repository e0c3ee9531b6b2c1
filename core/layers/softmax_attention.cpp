#include "core/layers/softmax_attention.h"

#include "core/ops/attention.h"
#include "core/ops/dispatch.h"
#include "core/ops/rope.h"

namespace memento {

SoftmaxAttention::SoftmaxAttention(ParameterSet& params, const std::string& name,
                                   AttentionDims dims, float rope_theta, float init_std,
                                   float out_init_std)
    : name_(name),
      dims_(dims),
      rope_theta_(rope_theta),
      qkv_(params, name, dims, init_std),
      o_proj_(params, name + ".o_proj", dims.NH * dims.HS, dims.C, out_init_std) {
  MEMENTO_EXPECT(dims.HS % 2 == 0, ShapeError, "SoftmaxAttention ", name,
                 ": RoPE needs an even head size, got HS ", dims.HS);
}

Tensor SoftmaxAttention::forward(LayerContext& ctx, const Tensor& x) {
  const int64_t B = x.size(0), T = x.size(1), NH = dims_.NH, HS = dims_.HS;
  const auto [q, k, v] = qkv_.forward(ctx, x);  // (B, T, NH, HS), (B, T, NKV, HS) x 2
  const ops::RopeTable rope =
      ops::rope_table(T, HS, rope_theta_, ops::stat_dtype(q.dtype()), q.device());
  ops::rope_(q, rope);
  ops::rope_(k, rope);
  const Tensor att = Tensor::empty(q.shape(), q.dtype(), q.device());  // (B, T, NH, HS)
  const Tensor lse =
      Tensor::empty({B, NH, T}, ops::stat_dtype(q.dtype()), q.device());  // (B, NH, T)
  ops::attention_forward(q, k, v, att, lse);
  // o_proj saves att under its own key; the store counts the shared storage once.
  Tensor y = o_proj_.forward(ctx, att.reshape({B, T, NH * HS}));  // (B, T, C)
  if (ctx.training) {
    ctx.store.save(name_ + "/q", q);
    ctx.store.save(name_ + "/k", k);
    ctx.store.save(name_ + "/v", v);
    ctx.store.save(name_ + "/att", att);
    ctx.store.save(name_ + "/lse", lse);
  }
  return y;
}

Tensor SoftmaxAttention::backward(LayerContext& ctx, const Tensor& dy) {
  const Tensor q = ctx.store.take(name_ + "/q");      // (B, T, NH, HS), rotated
  const Tensor k = ctx.store.take(name_ + "/k");      // (B, T, NKV, HS), rotated
  const Tensor v = ctx.store.take(name_ + "/v");      // (B, T, NKV, HS)
  const Tensor att = ctx.store.take(name_ + "/att");  // (B, T, NH, HS)
  const Tensor lse = ctx.store.take(name_ + "/lse");  // (B, NH, T)
  const int64_t T = q.size(1), HS = dims_.HS;
  const Tensor datt = o_proj_.backward(ctx, dy).reshape(q.shape());  // (B, T, NH, HS)
  const Device device = datt.device();
  const Tensor dq = Tensor::empty(q.shape(), q.dtype(), device);  // (B, T, NH, HS)
  const Tensor dk = Tensor::empty(k.shape(), k.dtype(), device);  // (B, T, NKV, HS)
  const Tensor dv = Tensor::empty(v.shape(), v.dtype(), device);  // (B, T, NKV, HS)
  ops::attention_backward(q, k, v, att, lse, datt, dq, dk, dv);
  const ops::RopeTable rope =
      ops::rope_table(T, HS, rope_theta_, ops::stat_dtype(q.dtype()), device);
  ops::rope_backward_(dq, rope);
  ops::rope_backward_(dk, rope);
  return qkv_.backward(ctx, dq, dk, dv);  // (B, T, C)
}

}  // namespace memento
