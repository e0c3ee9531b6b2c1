#include "core/layers/swiglu_mlp.h"

#include "core/ops/swiglu.h"

namespace memento {

SwiGLUMLP::SwiGLUMLP(ParameterSet& params, const std::string& name, int64_t C, int64_t F,
                     float init_std, float out_init_std)
    : name_(name),
      gate_proj_(params, name + ".gate_proj", C, F, init_std),
      up_proj_(params, name + ".up_proj", C, F, init_std),
      down_proj_(params, name + ".down_proj", F, C, out_init_std) {}

// down_proj's input h = silu(gate) * up is not saved: backward rebuilds it from gate and up,
// which are saved anyway, so the MLP keeps B*T*(C + 2F) values instead of B*T*(C + 3F). The
// rebuild costs no pass of its own: the SwiGLU backward writes h over dh, which it has just read.
Tensor SwiGLUMLP::forward(LayerContext& ctx, const Tensor& x) {
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

}  // namespace memento
