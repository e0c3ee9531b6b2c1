#include "parallel/pipeline_schedule.h"

#include "core/error.h"

namespace memento::parallel {

double OneStageSchedule::run(ModelStage& stage, ActivationStore& store, const Step& step) {
  double loss_sum = 0;
  for (int64_t micro = 0; micro < step.micro_batches; ++micro) {
    const MicroBatch batch = step.load(micro);
    const bool last = micro + 1 == step.micro_batches;
    const Tensor logits = stage.forward(store, micro, batch.tokens);  // (B, T, V)
    loss_sum += loss_and_gradient(logits, batch.targets, step.grad_scale).loss_sum;
    stage.backward(store, micro, logits, last ? step.grads_final : nullptr);  // logits: dlogits
  }
  return loss_sum;
}

std::unique_ptr<PipelineSchedule> make_schedule(const ParallelDims& dims) {
  MEMENTO_EXPECT(dims.pp == 1, ConfigError, "parallel.pp = ", dims.pp,
                 ": pipeline schedules for more than one stage are not built yet");
  return std::make_unique<OneStageSchedule>();
}

}  // namespace memento::parallel
