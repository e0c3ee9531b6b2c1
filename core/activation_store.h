// The activation store interface (ARCHITECTURE contract 3). A layer saves what its backward needs
// under a key and takes it back in backward; it never holds activations itself. Policies (keep,
// swap, recompute) and the dry-run recorder live in memory/.
#pragma once

#include <string>

#include "core/tensor.h"

namespace memento {

class ActivationStore {
 public:
  virtual ~ActivationStore() = default;
  // Keeps `t` under `key` until take(key). Keys are unique among live entries; tensors that share
  // storage (several layers saving one input) are counted once.
  virtual void save(const std::string& key, Tensor t) = 0;
  // Returns the tensor saved under `key` and forgets it. A missing key is a bug (fatal).
  virtual Tensor take(const std::string& key) = 0;
  // Bytes currently held, each storage counted once.
  virtual size_t live_bytes() const = 0;
};

}  // namespace memento
