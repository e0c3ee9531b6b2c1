// The order in which a step's micro-batches run forward and backward through this rank's model
// stage. Today's one-stage loop (forward, loss and backward of each micro-batch in turn) is the
// case pp = 1; pipeline parallelism adds 1F1B and interleaved 1F1B here, sending activations and
// their gradients between stages over the pp group.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>

#include "core/activation_store.h"
#include "core/model/model_stage.h"
#include "core/parallel/parallel_dims.h"

namespace memento::parallel {

// One micro-batch where the model computes: inputs and next-token targets, both (B, T) i32.
struct MicroBatch {
  Tensor tokens;
  Tensor targets;
};

class PipelineSchedule {
 public:
  struct Step {
    int64_t micro_batches = 1;                // this rank's micro-batches in the step
    double grad_scale = 1.0;                  // each token loss's weight in the gradients
    std::function<MicroBatch(int64_t)> load;  // micro-batch i of this rank
    // Told of final gradients during the last micro-batch's backward (null: nobody listens).
    ModelStage::GradsFinalHook grads_final;
  };
  virtual ~PipelineSchedule() = default;
  // Runs every micro-batch's forward and backward; parameter gradients accumulate (+=). Returns
  // the sum of the token losses (the last stage's; 0 on other stages).
  virtual double run(ModelStage& stage, ActivationStore& store, const Step& step) = 0;
};

// pp = 1: forward, loss and backward of micro-batch 0, then 1, ...: one micro-batch's activations
// live at a time.
class OneStageSchedule final : public PipelineSchedule {
 public:
  double run(ModelStage& stage, ActivationStore& store, const Step& step) override;
};

// The schedule of a layout: OneStageSchedule while pp = 1 (the only one yet; ParallelDims refuses
// pp > 1 before this is reached).
std::unique_ptr<PipelineSchedule> make_schedule(const ParallelDims& dims);

}  // namespace memento::parallel
