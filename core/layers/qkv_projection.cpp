#include "core/layers/qkv_projection.h"

namespace memento {

QkvProjection::QkvProjection(ParameterSet& params, const std::string& name, AttentionDims dims,
                             float init_std)
    : name_(name),
      dims_(dims),
      q_proj_(params, name + ".q_proj", dims.C, dims.NH * dims.HS, init_std),
      k_proj_(params, name + ".k_proj", dims.C, dims.NKV * dims.HS, init_std),
      v_proj_(params, name + ".v_proj", dims.C, dims.NKV * dims.HS, init_std) {
  MEMENTO_EXPECT(dims.NH > 0 && dims.NKV > 0 && dims.NH % dims.NKV == 0, ShapeError, name, ": NH ",
                 dims.NH, " must be a positive multiple of NKV ", dims.NKV);
}

QkvProjection::Qkv QkvProjection::forward(LayerContext& ctx, const Tensor& x) {
  MEMENTO_EXPECT(x.shape().ndim() == 3 && x.size(2) == dims_.C, ShapeError, name_,
                 ": x: expected (B, T, ", dims_.C, "), got ", x.shape().str());
  const int64_t B = x.size(0), T = x.size(1), NH = dims_.NH, NKV = dims_.NKV, HS = dims_.HS;
  return {q_proj_.forward(ctx, x).reshape({B, T, NH, HS}),
          k_proj_.forward(ctx, x).reshape({B, T, NKV, HS}),
          v_proj_.forward(ctx, x).reshape({B, T, NKV, HS})};
}

Tensor QkvProjection::backward(LayerContext& ctx, const Tensor& dq, const Tensor& dk,
                               const Tensor& dv) {
  const int64_t B = dq.size(0), T = dq.size(1), NH = dims_.NH, NKV = dims_.NKV, HS = dims_.HS;
  Tensor dx = q_proj_.backward(ctx, dq.reshape({B, T, NH * HS}));  // (B, T, C)
  k_proj_.backward_accumulate(ctx, dk.reshape({B, T, NKV * HS}), dx);
  v_proj_.backward_accumulate(ctx, dv.reshape({B, T, NKV * HS}), dx);
  return dx;
}

}  // namespace memento
