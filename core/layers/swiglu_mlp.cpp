#include "core/layers/swiglu_mlp.h"

#include "core/ops/swiglu.h"

namespace memento {

SwiGLUMLP::SwiGLUMLP(ParameterSet& params, const std::string& name, int64_t C, int64_t F,
                     float init_std, float out_init_std)
    : name_(name),
      F_(F),
      gate_up_(Linear::stacked(params, name, {{name + ".gate_proj", F}, {name + ".up_proj", F}}, C,
                               init_std)),
      down_proj_(params, name + ".down_proj", F, C, out_init_std) {}

// One GEMM for [gate | up] and one for both of their weight gradients and dx, each twice the size
// of the two it replaces (larger GEMMs run closer to the GPU's peak). down_proj's input
// h = silu(gate) * up is not saved: backward rebuilds it from gate and up, which are saved anyway,
// so the MLP keeps B*T*(C + 2F) values instead of B*T*(C + 3F). The rebuild costs no pass of its
// own: the SwiGLU backward writes h over dh, which it has just read.
Tensor SwiGLUMLP::forward(LayerContext& ctx, const Tensor& x) {
  Tensor gu = gate_up_.forward(ctx, x);  // (B, T, 2F) = x [Wg; Wu]^T; saves x
  Tensor h = Tensor::empty(x.shape().with_dim(-1, F_), x.dtype(), gu.device());  // (B, T, F)
  ops::swiglu_stacked_forward(gu, h);
  Tensor y = down_proj_.forward_unsaved(ctx, h);  // (B, T, C)
  if (ctx.training) ctx.store.save(name_ + "/gate_up", std::move(gu));
  return y;
}

Tensor SwiGLUMLP::backward(LayerContext& ctx, const Tensor& dy) {
  Tensor gu = ctx.store.take(name_ + "/gate_up");        // (B, T, 2F)
  const Tensor dh = down_proj_.backward_input(ctx, dy);  // (B, T, F)
  // In place: gu becomes [dgate | dup], and dh becomes h for down_proj's dW.
  const TensorView h = dh;
  ops::swiglu_stacked_backward(dh, gu, gu, &h);
  down_proj_.backward_weight(ctx, dy, dh);
  return gate_up_.backward(ctx, gu);  // dx = [dgate | dup] [Wg; Wu]; [dWg; dWu] += ^T x
}

}  // namespace memento
