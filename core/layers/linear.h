// The model's one GEMM layer: every GEMM of the model (attention projections, the MLP, the output
// head, tied or not) goes through a Linear, so that tensor parallelism (column and row shards)
// and FP8 (scaled GEMMs) each change this one type. No layer calls ops::matmul itself; a test
// (tests/scripts/) holds the tree to it.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/layers/layer.h"

namespace memento {

// The precision a Linear's GEMMs run in. kCompute: the parameters' compute copy and the
// activations' dtype (bf16 on a GPU with mixed precision, the parameters' dtype otherwise);
// kFp32: the fp32 master weight, for activations that are fp32 too (checked). FP8 (E4M3 forward,
// E5M2 gradients, with their scales) plugs in here.
enum class GemmPrecision : uint8_t { kCompute, kFp32 };

// One weight of a stacked Linear: "<name>.weight" (out, in).
struct LinearPart {
  std::string name;
  int64_t out;
};

// y = x W^T with W (out, in) as Hugging Face stores it; no bias. Three ways to hold W:
//  - its own: "<name>.weight" (out, in), normal(init_std);
//  - stacked: several weights declared back to back in the flat buffers (gate_proj and up_proj)
//    and used as one (sum of outs, in) weight, so one GEMM computes them all;
//  - tied: a parameter another layer owns (the token embedding (V, C) as the output head).
// forward: x (..., in) -> y (..., out); saves x under "<name>/x" (shared storage is counted once
// by the store). backward: dy (..., out) -> dx (..., in), overwriting; dW += dy^T x.
// backward_accumulate adds dx into an existing tensor inside the GEMM (beta = 1), for layers
// whose input feeds several projections. forward_unsaved, backward_input and backward_weight are
// the pieces for a layer that keeps x itself (or rebuilds it) and hands it over when dW is due.
class Linear {
 public:
  Linear(ParameterSet& params, const std::string& name, int64_t in, int64_t out, float init_std,
         GemmPrecision precision = GemmPrecision::kCompute);
  // The parts' weights, declared in order with no padding between them. `name` keys the saved x.
  static Linear stacked(ParameterSet& params, const std::string& name,
                        const std::vector<LinearPart>& parts, int64_t in, float init_std,
                        GemmPrecision precision = GemmPrecision::kCompute);
  // W is `weight` (out, in), declared by another layer; its gradient accumulates there too.
  static Linear tied(const ParameterSet& params, const std::string& name, ParamRef weight,
                     GemmPrecision precision = GemmPrecision::kCompute);

  Tensor forward(LayerContext& ctx, const Tensor& x);
  Tensor forward_unsaved(LayerContext& ctx, const Tensor& x);  // the same, saving nothing
  Tensor backward(LayerContext& ctx, const Tensor& dy);
  void backward_accumulate(LayerContext& ctx, const Tensor& dy, const Tensor& dx);
  Tensor backward_input(LayerContext& ctx, const Tensor& dy);                  // dx = dy W
  void backward_weight(LayerContext& ctx, const Tensor& dy, const Tensor& x);  // dW += dy^T x

  ParamRef weight() const { return weight_; }  // the first part's, when stacked
  int64_t in() const { return in_; }
  int64_t out() const { return out_; }  // the sum of the parts', when stacked
  GemmPrecision precision() const { return precision_; }

 private:
  Linear(std::string name, int64_t in, int64_t out, ParamRef weight, GemmPrecision precision);
  TensorView weight_view(const ParameterSet& params) const;  // (out, in) in the precision
  TensorView grad_view(const ParameterSet& params) const;    // (out, in)
  void expect_dy(const Tensor& dy) const;
  void backward_into(LayerContext& ctx, const Tensor& dy, Tensor& dx, bool accumulate);

  std::string name_;
  int64_t in_, out_;
  ParamRef weight_;  // (out, in), or the first of the stacked parts
  GemmPrecision precision_;
};

}  // namespace memento
