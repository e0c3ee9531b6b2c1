#include "parallel/pipeline_schedule.h"

#include <algorithm>

#include "core/error.h"

namespace memento::parallel {

double OneStageSchedule::run(ModelStage& stage, ActivationStore& store, const Step& step) {
  double loss_sum = 0;
  for (int64_t micro = 0; micro < step.micro_batches; ++micro) {
    const MicroBatch batch = step.load(micro);
    const bool last = micro + 1 == step.micro_batches;
    loss_sum += forward_loss_backward(stage, store, micro, batch.tokens, batch.targets,
                                      step.grad_scale, last ? step.grads_final : nullptr)
                    .loss_sum;
  }
  return loss_sum;
}

std::vector<PipelineEvent> pipeline_events(int stages, int chunks, int rank,
                                           int64_t micro_batches) {
  MEMENTO_CHECK(stages > 0 && chunks > 0 && 0 <= rank && rank < stages && micro_batches > 0,
                "pipeline_events(", stages, ", ", chunks, ", ", rank, ", ", micro_batches, ")");
  MEMENTO_EXPECT(chunks == 1 || micro_batches % stages == 0, ConfigError,
                 "parallel.pp_virtual = ", chunks, ": interleaving needs the micro-batches per ",
                 "step (", micro_batches, ") to be a multiple of parallel.pp (", stages, ")");
  const int64_t p = stages, v = chunks, total = micro_batches * v;
  // The k-th forward (or backward) of this rank: micro-batches go through the chunks in groups of
  // p, chunk 0 first for forwards and the last chunk first for backwards (Megatron's order).
  const auto event = [&](PipelineEvent::Kind kind, int64_t k) {
    const int64_t in_group = k % (p * v);
    int chunk = static_cast<int>(in_group / p);
    if (kind == PipelineEvent::Kind::kBackward) chunk = static_cast<int>(v - 1) - chunk;
    return PipelineEvent{kind, k / (p * v) * p + k % p, chunk};
  };
  int64_t warmup = v == 1 ? p - rank - 1 : (p - rank - 1) * 2 + (v - 1) * p;
  if (v > 1 && micro_batches == p) warmup = total;  // every forward first (Megatron)
  warmup = std::min(warmup, total);
  std::vector<PipelineEvent> events;
  for (int64_t k = 0; k < warmup; ++k) events.push_back(event(PipelineEvent::Kind::kForward, k));
  for (int64_t i = 0; i < total - warmup; ++i) {
    events.push_back(event(PipelineEvent::Kind::kForward, warmup + i));
    events.push_back(event(PipelineEvent::Kind::kBackward, i));
  }
  for (int64_t k = total - warmup; k < total; ++k)
    events.push_back(event(PipelineEvent::Kind::kBackward, k));
  return events;
}

std::string format_events(const std::vector<PipelineEvent>& events, int chunks) {
  std::string s;
  for (const PipelineEvent& e : events) {
    if (!s.empty()) s += ' ';
    s += e.kind == PipelineEvent::Kind::kForward ? 'F' : 'B';
    s += std::to_string(e.micro_batch);
    if (chunks > 1) {
      s += '.';
      s += std::to_string(e.chunk);
    }
  }
  return s;
}

std::unique_ptr<PipelineSchedule> make_schedule(const ParallelDims& dims) {
  MEMENTO_EXPECT(dims.pp == 1, ConfigError, "parallel.pp = ", dims.pp,
                 ": pipeline schedules for more than one stage are not built yet");
  return std::make_unique<OneStageSchedule>();
}

}  // namespace memento::parallel
