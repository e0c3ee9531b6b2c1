// The activation store interface (ARCHITECTURE contract 3). A layer saves what its backward needs
// under a key and takes it back in backward; it never holds activations itself. Policies (keep,
// swap, recompute) and the dry-run recorder live in memory/.
//
// Besides save and take, the store hears where the schedule is, so that a policy (MEMO) can act
// between layers without any layer knowing: the step begins and ends (trainer), the micro-batch
// changes (pipeline schedule, before each forward and each backward), a layer's forward or
// backward begins and ends (the model or stage, around each layer). Every hook has a default that
// does nothing: a store that ignores the schedule (evaluation's) implements save, take and
// live_bytes only.
#pragma once

#include <cstdint>
#include <string>
#include <utility>

#include "core/tensor.h"

namespace memento {

enum class Phase { kForward, kBackward };

inline const char* phase_name(Phase phase) {
  return phase == Phase::kForward ? "forward" : "backward";
}

class ActivationStore {
 public:
  virtual ~ActivationStore() = default;
  // Keeps `t` under `key` until take(key). Keys are unique among the live entries of one
  // micro-batch; tensors that share storage (several layers saving one input) are counted once.
  virtual void save(const std::string& key, Tensor t) = 0;
  // Returns the tensor the current micro-batch saved under `key` and forgets it. A missing key
  // is a bug (fatal).
  virtual Tensor take(const std::string& key) = 0;
  // Bytes currently held, each storage counted once.
  virtual size_t live_bytes() const = 0;

  // A training step begins / ends: between the two lie all of its micro-batches. Nothing is live
  // at either point.
  virtual void begin_step() {}
  virtual void end_step() {}
  // The micro-batch whose forward or backward runs next; saves and takes until the next call
  // belong to it (0 until called). Not called while a layer is open.
  virtual void set_micro_batch(int64_t /*micro_batch*/) {}
  // The forward or backward of `layer` (its name, the prefix of its keys) begins / ends for the
  // current micro-batch. Layers may nest; end_layer closes the innermost one.
  virtual void begin_layer(const std::string& /*layer*/, Phase /*phase*/) {}
  virtual void end_layer(const std::string& /*layer*/, Phase /*phase*/) {}
};

// Calls begin_layer now and end_layer at the end of the scope:
//   { LayerScope scope(ctx.store, block.name(), Phase::kForward); x = block.forward(ctx, x); }
class LayerScope {
 public:
  LayerScope(ActivationStore& store, std::string layer, Phase phase)
      : store_(store), layer_(std::move(layer)), phase_(phase) {
    store_.begin_layer(layer_, phase_);
  }
  ~LayerScope() { store_.end_layer(layer_, phase_); }
  LayerScope(const LayerScope&) = delete;
  LayerScope& operator=(const LayerScope&) = delete;

 private:
  ActivationStore& store_;
  std::string layer_;
  Phase phase_;
};

}  // namespace memento
