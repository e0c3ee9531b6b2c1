// Where a host-memory checkpoint engine's bytes come from. The owners of state publish buffers on
// whatever device (the flat parameter values, each optimizer state); the registries an engine
// reads (checkpoint/state_registry.h) view host memory. StateStaging pairs each published buffer
// with a host mirror (pinned for a GPU run) and moves the bytes between them: the buffer itself
// when it is in host memory already and nothing needs a frozen copy.
//
// The copies run on a stream of their own (copy_async), so a lazy snapshot can overlap the next
// step's forward and backward; before_mutation() is the one call the step makes before the
// optimizer (or the ZeRO-1 gather) overwrites state, and it waits only for copies still reading
// it. Today's HDF5 save starts the copy and waits for it at once.
#pragma once

#include <memory>
#include <vector>

#include "core/memory_resource.h"
#include "core/stream.h"

namespace memento::checkpoint {

class StateStaging {
 public:
  // copy_host: host buffers get a mirror too (a snapshot that must not see the next step's
  // writes) instead of being read in place.
  explicit StateStaging(bool copy_host = false);
  ~StateStaging();
  StateStaging(const StateStaging&) = delete;
  StateStaging& operator=(const StateStaging&) = delete;

  // Publishes `source` (which must stay alive and in place) and returns the host view that
  // registries should hold for it: its mirror (zeroed), or `source` itself when it is read in
  // place. The mirror comes from `host_memory` (nullptr: the CPU default); throws
  // OutOfMemoryError when it does not fit.
  TensorView stage(const TensorView& source, MemoryResource* host_memory = nullptr);
  // The stream the copies run on (the synchronous CPU stream until a mirror exists): an engine
  // queues its own work after them here.
  StreamView stream() const { return stream_ ? stream_->view() : StreamView(); }
  // Bytes of the mirrors (0 when every source is read in place).
  size_t mirror_bytes() const;

  // Queues the copy of every mirrored source into its mirror on the staging stream and returns at
  // once; wait_to_host() blocks until it is done: the mirrors then hold the sources' values as of
  // the call.
  void start_to_host();
  void wait_to_host();
  // Copies every mirror back into its source (after a load) and waits.
  void copy_from_host();
  // Called by the step before anything overwrites a source: waits for copies still reading the
  // sources. Cheap when none is in flight.
  void before_mutation();

  // Test-only: before_mutation() returns without waiting, to show that the wait is what keeps a
  // staged copy consistent. Returns the previous setting.
  static bool skip_mutation_wait_for_testing(bool on);

 private:
  struct Mirror {
    TensorView source;
    Tensor host;
  };
  bool copy_host_;
  std::vector<Mirror> mirrors_;
  std::unique_ptr<Stream> stream_;  // created with the first mirror, on its source's device
  Event copied_;
  bool in_flight_ = false;
};

}  // namespace memento::checkpoint
