// The optimizer interface. An optimizer owns its states, reports their bytes for the memory table,
// publishes them (views with their place in the flat parameter layout) for checkpoints and
// snapshots, and updates the parameters of its flat ranges. The trainer names no optimizer: it
// builds one with make_optimizer(optim.name, ...). AdamW (optim/adamw.h) is the first; GaLore,
// APOLLO and interleaved CPU/GPU offload plug in here.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/parameters.h"

namespace memento::optim {

// One state buffer as the optimizer publishes it: `values` holds the state of flat elements
// `range` of the parameter buffers, on whatever device the optimizer keeps it.
struct OptimizerState {
  std::string name;   // "exp_avg", "exp_avg_sq", ...
  TensorView values;  // (range.size(),)
  FlatRange range;
};

struct StepArgs {
  double lr = 0;
  // Global-norm clipping's factor, applied as the gradients are read (the stored gradients are
  // left as they are).
  double grad_scale = 1.0;
};

class Optimizer {
 public:
  virtual ~Optimizer() = default;
  virtual std::string name() const = 0;
  // One update of every parameter element in ranges() from its gradient.
  virtual void step(ParameterSet& params, const StepArgs& args) = 0;
  // The flat ranges this rank's optimizer updates (a ZeRO-1 shard: one range), ascending.
  virtual const std::vector<FlatRange>& ranges() const = 0;
  virtual std::vector<OptimizerState> states() const = 0;
  virtual size_t state_bytes() const = 0;
  virtual int64_t& step_count() = 0;  // updates taken so far (checkpointed)
};

// The hyper-parameters every optimizer reads from the optim: section (launch/config.h).
struct OptimizerOptions {
  std::string name = "adamw";
  double beta1 = 0.9;
  double beta2 = 0.95;
  double eps = 1e-8;
  double weight_decay = 0.1;  // only for entries declared with weight_decay
};

// The optimizers make_optimizer knows ({"adamw"}); the config accepts exactly these.
const std::vector<std::string>& optimizer_names();
// Builds optimizer `options.name` for `ranges` of `params` (allocated). Throws ConfigError naming
// optim.name for an unknown one.
std::unique_ptr<Optimizer> make_optimizer(const OptimizerOptions& options,
                                          const ParameterSet& params, FlatRange range);
// Bytes of state per parameter for master weights of `master` dtype (the memory plan's figure).
size_t state_bytes_per_param(const std::string& name, DType master);

}  // namespace memento::optim
