// The order in which a step's micro-batches run forward and backward through this rank's model
// stage. Today's one-stage loop (forward, loss and backward of each micro-batch in turn) is the
// case pp = 1; pipeline parallelism adds 1F1B and interleaved 1F1B here, sending activations and
// their gradients between stages over the pp group.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

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

// One step of a pipeline stage's work: the forward or backward of one micro-batch through one of
// the rank's model chunks (chunk c of rank r is virtual stage c * pp + r; one chunk without
// interleaving).
struct PipelineEvent {
  enum class Kind : uint8_t { kForward, kBackward };
  Kind kind = Kind::kForward;
  int64_t micro_batch = 0;
  int chunk = 0;
  friend bool operator==(const PipelineEvent&, const PipelineEvent&) = default;
};

// The order in which pipeline rank `rank` of `stages` runs `micro_batches` micro-batches through
// its `chunks` model chunks: 1F1B for one chunk (stages - rank - 1 warm-up forwards, then one
// forward and one backward in turn, then the remaining backwards), Megatron's interleaved 1F1B
// for more. The schedule as data: the trainer executes it and tests compare it with golden
// tables. Throws ConfigError naming parallel.pp_virtual when interleaving with a number of
// micro-batches that is not a multiple of `stages`.
std::vector<PipelineEvent> pipeline_events(int stages, int chunks, int rank, int64_t micro_batches);
// "F0 F1 B0 ..." (one chunk) or "F0.0 F1.0 ... B0.1" (micro-batch.chunk).
std::string format_events(const std::vector<PipelineEvent>& events, int chunks);

// The schedule of a layout: OneStageSchedule while pp = 1 (the only one yet; ParallelDims refuses
// pp > 1 before this is reached).
std::unique_ptr<PipelineSchedule> make_schedule(const ParallelDims& dims);

}  // namespace memento::parallel
