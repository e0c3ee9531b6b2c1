#include "core/layers/swiglu_mlp.h"

#include "core/ops/matmul.h"
#include "core/ops/swiglu.h"

namespace memento {

SwiGLUMLP::SwiGLUMLP(ParameterSet& params, const std::string& name, int64_t C, int64_t F,
                     float init_std, float out_init_std)
    : name_(name),
      C_(C),
      F_(F),
      gate_proj_(params, name + ".gate_proj", C, F, init_std),
      up_proj_(params, name + ".up_proj", C, F, init_std),
      down_proj_(params, name + ".down_proj", F, C, out_init_std),
      stacked_(params.adjacent(gate_proj_.weight(), up_proj_.weight())) {}

// down_proj's input h = silu(gate) * up is not saved: backward rebuilds it from gate and up,
// which are saved anyway, so the MLP keeps B*T*(C + 2F) values instead of B*T*(C + 3F). The
// rebuild costs no pass of its own: the SwiGLU backward writes h over dh, which it has just read.
// When gate_proj's and up_proj's weights lie back to back in the flat buffers (F * C a multiple of
// the alignment, so always for real models), they act as one stacked (2F, C) weight: one GEMM for
// [gate | up], one for dx and one for both weight gradients, each twice the size of the two they
// replace (larger GEMMs run closer to the GPU's peak).
Tensor SwiGLUMLP::forward(LayerContext& ctx, const Tensor& x) {
  if (stacked_) return forward_stacked(ctx, x);
  Tensor gate = gate_proj_.forward(ctx, x);                             // (B, T, F)
  Tensor up = up_proj_.forward(ctx, x);                                 // (B, T, F)
  Tensor h = Tensor::empty(gate.shape(), gate.dtype(), gate.device());  // (B, T, F)
  ops::swiglu_forward(gate, up, h);
  LayerContext no_save{ctx.params, ctx.store, false};
  Tensor y = down_proj_.forward(no_save, h);  // (B, T, C)
  if (ctx.training) {
    ctx.store.save(name_ + "/gate", std::move(gate));
    ctx.store.save(name_ + "/up", std::move(up));
  }
  return y;
}

Tensor SwiGLUMLP::backward(LayerContext& ctx, const Tensor& dy) {
  if (stacked_) return backward_stacked(ctx, dy);
  Tensor gate = ctx.store.take(name_ + "/gate");         // (B, T, F)
  Tensor up = ctx.store.take(name_ + "/up");             // (B, T, F)
  const Tensor dh = down_proj_.backward_input(ctx, dy);  // (B, T, F)
  // In place: gate and up become their gradients, and dh becomes h for down_proj's dW.
  const TensorView h = dh;
  ops::swiglu_backward(dh, gate, up, gate, up, &h);
  down_proj_.backward_weight(ctx, dy, dh);
  Tensor dx = gate_proj_.backward(ctx, gate);  // (B, T, C)
  up_proj_.backward_accumulate(ctx, up, dx);
  return dx;
}

Tensor SwiGLUMLP::forward_stacked(LayerContext& ctx, const Tensor& x) {
  MEMENTO_EXPECT(x.shape().ndim() >= 1 && x.size(-1) == C_, ShapeError, "SwiGLUMLP ", name_,
                 ": x: expected (..., ", C_, "), got ", x.shape().str());
  const TensorView w = ctx.params.compute_span(gate_proj_.weight(), Shape{2 * F_, C_});
  const Device device = w.is_meta() ? Device::meta() : x.device();
  Tensor gu = Tensor::empty(x.shape().with_dim(-1, 2 * F_), x.dtype(), device);  // (B, T, 2F)
  ops::matmul(x, false, w, true, gu);  // [gate | up] = x [Wg; Wu]^T
  Tensor h = Tensor::empty(x.shape().with_dim(-1, F_), x.dtype(), device);  // (B, T, F)
  ops::swiglu_stacked_forward(gu, h);
  LayerContext no_save{ctx.params, ctx.store, false};
  Tensor y = down_proj_.forward(no_save, h);  // (B, T, C)
  if (ctx.training) {
    ctx.store.save(name_ + "/x", x);
    ctx.store.save(name_ + "/gate_up", std::move(gu));
  }
  return y;
}

Tensor SwiGLUMLP::backward_stacked(LayerContext& ctx, const Tensor& dy) {
  const Tensor x = ctx.store.take(name_ + "/x");         // (B, T, C)
  Tensor gu = ctx.store.take(name_ + "/gate_up");        // (B, T, 2F)
  const Tensor dh = down_proj_.backward_input(ctx, dy);  // (B, T, F)
  // In place: gu becomes [dgate | dup], and dh becomes h for down_proj's dW.
  const TensorView h = dh;
  ops::swiglu_stacked_backward(dh, gu, gu, &h);
  down_proj_.backward_weight(ctx, dy, dh);
  const Shape stacked{2 * F_, C_};
  const TensorView w = ctx.params.compute_span(gate_proj_.weight(), stacked);
  const bool meta = gu.device().is_meta() || x.device().is_meta() || w.is_meta();
  Tensor dx = Tensor::empty(x.shape(), x.dtype(), meta ? Device::meta() : x.device());
  ops::matmul(gu, false, w, false, dx);  // dx = [dgate | dup] [Wg; Wu]; skipped when kMeta
  // [dWg; dWu] += [dgate | dup]^T x. In a dry run the gradient may have bytes while gu has none.
  if (!meta)
    ops::matmul(gu, true, x, false, ctx.params.grad_span(gate_proj_.weight(), stacked), 1.0, 1.0);
  return dx;
}

}  // namespace memento
