// AdamW (Loshchilov & Hutter) with decoupled weight decay, over the flat parameter buffer.
// States exp_avg and exp_avg_sq are fp32 (fp64 when the parameters are fp64) buffers with the
// parameter buffer's layout, so ZeRO shards and snapshots are ranges of them (contract 1).
#pragma once

#include <cstdint>

#include "core/parameters.h"
#include "optim/optimizer.h"

namespace memento::optim {

struct AdamWOptions {
  double beta1 = 0.9;
  double beta2 = 0.95;
  double eps = 1e-8;
  double weight_decay = 0.1;  // applied only to entries declared with weight_decay
};

class AdamW final : public Optimizer {
 public:
  // States for `shard` of the flat buffer (the whole buffer when shard is empty).
  AdamW(const ParameterSet& params, AdamWOptions options, FlatRange shard = {});

  // One update of every parameter in the shard from its gradient at learning rate lr:
  //   m = b1 m + (1-b1) g;  v = b2 v + (1-b2) g^2;  p -= lr (m_hat / (sqrt(v_hat) + eps) + wd p),
  // with g = grad_scale times the stored gradient (global-norm clipping's factor, applied as the
  // gradients are read instead of in a pass over them; the stored gradients are left as they are).
  void step(ParameterSet& params, double lr, double grad_scale = 1.0);
  void step(ParameterSet& params, const StepArgs& args) override {
    step(params, args.lr, args.grad_scale);
  }
  std::string name() const override { return "adamw"; }
  const std::vector<FlatRange>& ranges() const override { return ranges_; }
  // exp_avg and exp_avg_sq, each over the shard.
  std::vector<OptimizerState> states() const override;

  int64_t& step_count() override { return step_; }  // updates taken so far (checkpointed)
  FlatRange shard() const { return shard_; }
  TensorView exp_avg() const { return exp_avg_; }  // (shard.size(),)
  TensorView exp_avg_sq() const { return exp_avg_sq_; }
  size_t state_bytes() const override { return exp_avg_.bytes() + exp_avg_sq_.bytes(); }
  // Bytes of state per parameter for master weights of `master` dtype (the memory plan's figure).
  static size_t state_bytes_per_param(DType master) { return 2 * dtype_size(master); }

 private:
  AdamWOptions options_;
  FlatRange shard_;
  std::vector<FlatRange> ranges_;  // {shard_}
  int64_t step_ = 0;
#ifdef MEMENTO_WITH_CUDA
  void step_cuda(ParameterSet& params, double lr, double grad_scale);
#endif
  Tensor exp_avg_;     // (shard.size(),)
  Tensor exp_avg_sq_;  // (shard.size(),)
};

}  // namespace memento::optim
