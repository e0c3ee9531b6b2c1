// What every layer shares. Layers have explicit forward and backward (ARCHITECTURE contract 2):
//  - parameter gradients accumulate (+=) into ParameterSet::grad, so micro-batches add up;
//  - activation gradients overwrite (=): backward returns a fresh tensor;
//  - whatever backward needs is saved in ctx.store under "<layer name>/<what>" and taken back.
// Activations have the dtype and device of the parameters (fp32 or fp64 on the CPU).
#pragma once

#include "core/activation_store.h"
#include "core/parallel/parallel_context.h"
#include "core/parameters.h"

namespace memento {

struct LayerContext {
  ParameterSet& params;
  ActivationStore& store;
  bool training = true;  // false: forward saves nothing and backward must not be called
  // The tensor-, context- and pipeline-parallel groups (all of size 1 unless the model was built
  // for a parallel layout).
  const parallel::ParallelContext& parallel = parallel::ParallelContext::single();
};

}  // namespace memento
