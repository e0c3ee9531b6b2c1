#include "core/parallel/parallel_context.h"

#include "core/parallel/self_communicator.h"

namespace memento::parallel {
namespace {

// One-rank groups for contexts without a layout; never destroyed, so a context copied into a
// static outlives nothing it points to.
SelfCommunicator& self_group(int axis) {
  static auto* groups = new SelfCommunicator[3]{SelfCommunicator("tp"), SelfCommunicator("cp"),
                                                SelfCommunicator("pp")};
  return groups[axis];
}

}  // namespace

ParallelContext::ParallelContext()
    : tp_(&self_group(0)), cp_(&self_group(1)), pp_(&self_group(2)) {}

ParallelContext::ParallelContext(Communicator& tp, Communicator& cp, Communicator& pp)
    : tp_(&tp), cp_(&cp), pp_(&pp) {}

const ParallelContext& ParallelContext::single() {
  static const ParallelContext context;
  return context;
}

}  // namespace memento::parallel
