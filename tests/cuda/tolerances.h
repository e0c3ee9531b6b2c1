// The one table of CUDA-vs-CPU parity tolerances. Error is measured as
//   max_i |gpu_i - cpu_i| / max_i |cpu_i|
// (the largest deviation relative to the largest reference magnitude), with the CPU op run in
// fp64 on exactly the values the GPU saw. It is keyed by the activation dtype of the GPU op.
#pragma once

#include <algorithm>
#include <cmath>
#include <vector>

#include "core/dtype.h"

namespace memento::testing {

struct ParityTolerance {
  DType dtype;
  double max_relative_error;
};

inline constexpr ParityTolerance kParityTolerances[] = {
    {DType::kBF16, 1e-2},  // bf16 outputs: 8 significant bits, rounded once
    {DType::kF32, 1e-5},   // fp32 compute and outputs
};

inline double parity_tolerance(DType dtype) {
  for (const auto& t : kParityTolerances)
    if (t.dtype == dtype) return t.max_relative_error;
  return 0.0;  // no entry: every comparison fails, which names the missing row
}

inline double relative_max_error(const std::vector<double>& got, const std::vector<double>& ref) {
  double max_err = 0, max_ref = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    max_err = std::max(max_err, std::abs(got[i] - ref[i]));
    max_ref = std::max(max_ref, std::abs(ref[i]));
  }
  if (got.size() != ref.size() || std::isnan(max_err)) return INFINITY;
  return max_ref > 0 ? max_err / max_ref : max_err;
}

}  // namespace memento::testing
