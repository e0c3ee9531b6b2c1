// Where the activation store's policy is chosen: memory.activation_policy names one of
// activation_policies(), and make_activation_store builds it. The config's validation reads the
// same list, so a policy added here is accepted there.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "memory/activation_store.h"

namespace memento {

// The known policies, in the order the error messages list them ("keep" today; swap, recompute
// and MEMO's token-wise mix later).
const std::vector<std::string>& activation_policies();

// The store for `policy`. Throws ConfigError naming memory.activation_policy and listing the known
// policies when `policy` is not one of them.
std::unique_ptr<RecordingActivationStore> make_activation_store(const std::string& policy);

}  // namespace memento
