#include "optim/optimizer.h"

#include "optim/adamw.h"

namespace memento::optim {
namespace {

std::string known_names() {
  std::string list;
  for (const std::string& n : optimizer_names()) list += (list.empty() ? "" : ", ") + n;
  return list;
}

}  // namespace

const std::vector<std::string>& optimizer_names() {
  static const std::vector<std::string> names = {"adamw"};
  return names;
}

std::unique_ptr<Optimizer> make_optimizer(const OptimizerOptions& options,
                                          const ParameterSet& params, FlatRange range) {
  if (options.name == "adamw") {
    return std::make_unique<AdamW>(
        params, AdamWOptions{options.beta1, options.beta2, options.eps, options.weight_decay},
        range);
  }
  throw ConfigError(detail::concat("optim.name: unknown optimizer '", options.name,
                                   "'; known optimizers: ", known_names()));
}

size_t state_bytes_per_param(const std::string& name, DType master) {
  if (name == "adamw") return AdamW::state_bytes_per_param(master);
  throw ConfigError(detail::concat("optim.name: unknown optimizer '", name,
                                   "'; known optimizers: ", known_names()));
}

}  // namespace memento::optim
