#include "optim/grad_clip.h"

#include <cmath>

#include "core/ops/elementwise.h"

namespace memento::optim {

double global_grad_norm(const TensorView& flat_grads) {
  return std::sqrt(ops::sum_of_squares(flat_grads));
}

double clip_factor(double norm, double max_norm) {
  if (max_norm <= 0 || !(norm > max_norm)) return 1.0;
  return max_norm / (norm + 1e-6);
}

double clip_grad_norm(const TensorView& flat_grads, double norm, double max_norm) {
  const double factor = clip_factor(norm, max_norm);
  if (factor != 1.0) ops::scale_(flat_grads, factor);
  return factor;
}

}  // namespace memento::optim
