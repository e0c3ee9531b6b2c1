#include "memory/activation_policy.h"

#include "core/error.h"

namespace memento {

const std::vector<std::string>& activation_policies() {
  static const std::vector<std::string> policies = {"keep"};
  return policies;
}

std::unique_ptr<RecordingActivationStore> make_activation_store(const std::string& policy) {
  if (policy == "keep") return std::make_unique<KeepActivationStore>();
  std::string known;
  for (const std::string& name : activation_policies()) {
    known += known.empty() ? name : detail::concat(", ", name);
  }
  throw ConfigError(detail::concat("memory.activation_policy: unknown policy '", policy,
                                   "'; known policies: ", known));
}

}  // namespace memento
